"""sefe: Answer Style Diversification and RegLoRA for multimodal continual instruction tuning (SEFE)."""

__version__ = "0.1.0"
