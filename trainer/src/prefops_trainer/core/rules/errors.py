"""The one error the shared rules raise."""

from __future__ import annotations


class InvalidSpec(ValueError):
    """The user's spec is wrong; permanent (a job or sweep fails with reason InvalidSpec, never retried). The
    message starts with the field path at fault, e.g. ``spec.parameters[0].path: ...``."""
