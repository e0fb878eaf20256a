"""Torch math: how prefops computes what TRL computes, faster, with the same numbers."""
