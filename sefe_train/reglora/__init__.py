"""RegLoRA: key elements of earlier LoRA updates and the penalty that protects them."""
