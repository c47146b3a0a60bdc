"""sefe: Answer Style Diversification and RegLoRA for multimodal continual instruction tuning (SEFE, ICML 2025)."""

__version__ = "0.1.0"
