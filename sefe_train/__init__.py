"""Continual instruction tuning: the run config, the continual loop and its methods (LoRA, RegLoRA, ...).

The model stack is `sefe.models`, evaluation `sefe.evaluation`; docs/ARCHITECTURE.md shows how they meet.
"""
