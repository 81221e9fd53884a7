"""CONTRACT.md's nodes and their required inputs, in order (saved workflows store widget values by position)."""

CONTRACT_INPUTS = {
    "CinematicCheckpointLoader": ["model_name", "weight_dtype"],
    "CinematicUNet3DLoader": ["unet_name", "weight_dtype"],
    "CinematicTextEncoderLoader": ["text_encoder_name"],
    "CinematicVAELoader": ["vae_name"],
    "CinematicTextEncode": ["text_encoder", "text"],
    "CinematicEmptyVideoLatent": ["width", "height", "frames", "batch_size"],
    "CinematicSampler": ["unet", "positive", "negative", "latent", "seed", "steps", "cfg", "sampler_name",
                         "scheduler", "denoise"],
    "CinematicVAEDecode": ["vae", "latent", "frames_per_batch"],
    "CinematicVAEEncode": ["vae", "images"],
    "CinematicSaveVideo": ["images", "fps", "filename_prefix", "format"],
    "CinematicUNet3DToModel": ["unet"],
    # second round
    "CinematicLoraLoader": ["unet", "lora_name", "strength"],
    "CinematicTemporalStrength": ["unet", "attention_strength", "conv_strength"],
    "CinematicContextOptions": ["context_length", "context_overlap", "context_schedule", "fuse_method"],
    "CinematicPromptSchedule": ["text_encoder", "text", "frames"],
    # third round
    "CinematicImageToVideoLatent": ["vae", "images", "frames", "keyframes", "strength"],
    "CinematicExtendVideo": ["latent", "frames", "overlap"],
    "CinematicJoinVideos": ["first", "second", "overlap"],
}
