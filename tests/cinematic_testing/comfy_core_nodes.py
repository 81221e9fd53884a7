"""The core ComfyUI nodes the example workflows use, with their inputs, widgets and outputs as in current ComfyUI
(checked against v0.3.6x's nodes.py; the training nodes against 0.33.0's comfy_extras/nodes_train.py, whose widgets
differ from v0.3.64's). Workflows may only use these and the pack's own nodes."""

CORE_NODES = {
    "LoadImage": {
        "inputs": {},
        "widgets": ["image", "upload"],
        "defaults": {"image": "example.png", "upload": "image"},
        "outputs": ["IMAGE", "MASK"],
    },
    "DifferentialDiffusion": {  # v0.3.64 and 0.33 (V3 schema): an optional strength widget
        "inputs": {"model": "MODEL"},
        "widgets": ["strength"],
        "defaults": {"strength": 1.0},
        "outputs": ["MODEL"],
    },
    "ImageScale": {
        "inputs": {"image": "IMAGE"},
        "widgets": ["upscale_method", "width", "height", "crop"],
        "defaults": {"upscale_method": "nearest-exact", "width": 512, "height": 512, "crop": "disabled"},
        "outputs": ["IMAGE"],
    },
    "CLIPLoader": {
        "inputs": {},
        "widgets": ["clip_name", "type", "device"],
        "defaults": {"type": "stable_diffusion", "device": "default"},
        "outputs": ["CLIP"],
    },
    "FreeU": {
        "inputs": {"model": "MODEL"},
        "widgets": ["b1", "b2", "s1", "s2"],
        "defaults": {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2},
        "outputs": ["MODEL"],
    },
    "KSampler": {
        "inputs": {"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "latent_image": "LATENT"},
        "widgets": ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
        "defaults": {"seed": 0, "control_after_generate": "fixed", "steps": 20, "cfg": 8.0, "sampler_name": "euler",
                     "scheduler": "normal", "denoise": 1.0},
        "outputs": ["LATENT"],
    },
    "CLIPTextEncode": {
        "inputs": {"clip": "CLIP"},
        "widgets": ["text"],
        "defaults": {"text": ""},
        "outputs": ["CONDITIONING"],
    },
    "TrainLoraNode": {
        "inputs": {"model": "MODEL", "latents": "LATENT", "positive": "CONDITIONING"},
        "widgets": ["batch_size", "grad_accumulation_steps", "steps", "learning_rate", "rank", "optimizer",
                    "loss_function", "seed", "control_after_generate", "training_dtype", "lora_dtype", "quantized_backward", "algorithm",
                    "gradient_checkpointing", "checkpoint_depth", "offloading", "existing_lora", "bucket_mode",
                    "bypass_mode"],
        "defaults": {"batch_size": 1, "grad_accumulation_steps": 1, "steps": 16, "learning_rate": 0.0005, "rank": 8,
                     "optimizer": "AdamW", "loss_function": "MSE", "seed": 0, "control_after_generate": "fixed",
                     "training_dtype": "bf16",
                     "lora_dtype": "bf16", "quantized_backward": False, "algorithm": "LoRA",
                     "gradient_checkpointing": True, "checkpoint_depth": 1, "offloading": False,
                     "existing_lora": "[None]", "bucket_mode": False, "bypass_mode": False},
        "outputs": ["LORA_MODEL", "LOSS_MAP", "INT"],  # 0.33 (v0.3.64 also returned the MODEL first)
    },
    "SaveLoRA": {
        "inputs": {"lora": "LORA_MODEL"},
        "widgets": ["prefix"],
        "defaults": {"prefix": "loras/ComfyUI_trained_lora"},
        "outputs": [],
    },
    "LoraModelLoader": {
        "inputs": {"model": "MODEL", "lora": "LORA_MODEL"},
        "widgets": ["strength_model", "bypass"],
        "defaults": {"strength_model": 1.0, "bypass": False},
        "outputs": ["MODEL"],
    },
}
