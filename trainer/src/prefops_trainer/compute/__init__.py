"""Tensor work that is not I/O: reference log-probs, tokenization as TRL does it, prefix sharing (packed pairs)."""
