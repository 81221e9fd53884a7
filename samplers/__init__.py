"""Samplers and sigma schedules (two registries). Never imports ComfyUI."""
