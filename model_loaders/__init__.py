"""Pure-torch model code and loaders. Never imports ComfyUI."""
