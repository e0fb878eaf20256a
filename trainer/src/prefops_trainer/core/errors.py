"""Error taxonomy. A :class:`UserError` is the user's to fix (bad spec, data or path): the CLI prints its
one-paragraph message and exits 2 with no traceback. Everything else is a bug or an outage and keeps its
traceback. A :class:`GateNotMet` is neither: the job ran, and its model missed the quality gate (exit 3)."""

from typing import Any


class UserError(Exception):
    """A mistake in the job's input that retrying will not fix."""

    exit_code = 2


class SpecError(UserError):
    """The job spec is invalid; the message names the field path."""


class DataError(UserError):
    """The dataset is unusable; the message names the file and, where it applies, the row."""


class SourceError(UserError):
    """A model or dataset source cannot be read (missing path, hub offline, ...)."""


class CacheError(UserError):
    """The reference cache disagrees with the model it claims to describe."""


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
