# Generated from trainer/src/prefops_trainer/core/rules/lifecycle.py
# by scripts/gen_shared_copies.py (a test checks it is current): do not edit.
"""The spec fields of a job's lifecycle: pausing, its limits and its deadlines. None of them shapes the model: the
operator lets them change while a job runs (``core/frozen.py``), and a published model withholds them
(``core/redact.py``). Pure."""

from __future__ import annotations

#: dotted, under ``spec``
LIFECYCLE: tuple[str, ...] = (
    "suspend",
    "backoffLimit",
    "disruptionLimit",
    "nodeLostGraceSeconds",
    "activeDeadlineSeconds",
    "startupDeadlineSeconds",
    "ttlSecondsAfterFinished",
)
