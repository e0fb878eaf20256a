"""Error taxonomy. A :class:`UserError` is the user's to fix (bad spec, data or path, or data in storage that fails
an integrity check): the CLI prints its one-paragraph message and exits 2 with no traceback, and the operator does
not retry. A :class:`TransientError` is an outage that outlasted the retries: one paragraph, exit 1, and the
operator's restart policy applies. A :class:`GateNotMet` is neither: the job ran, and its model missed the quality
gate (exit 3). An :class:`Interrupted` phase stopped cleanly on SIGTERM and asks to be resumed (exit 75). Everything
else is a bug or a crash and keeps its traceback (exit 1)."""

from typing import Any


class UserError(Exception):
    """A mistake in the job's input that retrying will not fix."""

    exit_code = 2


class SpecError(UserError):
    """The job spec is invalid, or asks for what this machine cannot do; the message names the field path."""


class DataError(UserError):
    """The dataset is unusable; the message names the file and, where it applies, the row."""


class SourceError(UserError):
    """A model or dataset source cannot be read (missing path, no access, hub offline, ...)."""


class CacheError(UserError):
    """The reference cache disagrees with the model it claims to describe."""


class MergeError(UserError):
    """The trained adapter or the base weights cannot be merged as they are (a peft setting the merge does not support,
    a tensor the base lacks, a file that is not safetensors); the message names the field, tensor or file."""


class GateNotMet(Exception):
    """The final evaluation misses ``spec.output.gate``: export wrote nothing to ``output.uri`` (docs/contract.md §8).
    Not a retry case and not an input error: the CLI exits 3 with :attr:`termination` as the termination message.

    Attributes:
        termination: ``{"gate": {"metric", "value", "min" | "max", "step", "trained"}}``.
    """

    exit_code = 3

    def __init__(self, explanation: str, termination: dict[str, Any]) -> None:
        super().__init__(explanation)
        self.termination = termination


class IntegrityError(UserError):
    """Data read from storage fails a safety or integrity check: an object key that would land outside its folder,
    a file whose sha256 differs from the one recorded when it was written, a file no record lists. Nothing of it is
    loaded; reading it again reads the same data, so it is permanent until someone removes or rewrites it."""


class TransientError(Exception):
    """Object storage or the Hub stayed unreachable (connection errors, 5xx, 429) through every retry: not the job's
    fault, so the phase exits 1 and a restart may succeed."""

    exit_code = 1


class Interrupted(BaseException):
    """The phase stopped on SIGTERM (preemption, a drain, a deleted pod) and left nothing half-written: training saved a
    checkpoint at a step boundary first. Exit 75, "interrupted, resume me" (docs/contract.md §4): the operator counts a
    disruption, not a failure, and a restart goes on from where this one stopped. Raised from a signal handler at any
    point, so, like ``KeyboardInterrupt``, it is no ``Exception`` that a library's ``except Exception`` would swallow
    (a retry loop, a cleanup that logs and goes on)."""

    exit_code = 75
