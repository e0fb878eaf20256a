"""prefops trainer: precompute reference log-probs, train with TRL (+ DeepSpeed), merge LoRA and export."""

__version__ = "0.1.0"
