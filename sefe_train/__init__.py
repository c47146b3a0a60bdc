"""Continual instruction tuning of LLaVA-1.5 with LoRA / RegLoRA, and CoIN evaluation."""
