"""Model loading, the embedded default, chat templates and LoRA target presets."""
