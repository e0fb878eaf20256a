"""Error taxonomy. A :class:`UserError` is the user's to fix (bad spec, data or path): the CLI prints its
one-paragraph message and exits 2 with no traceback. Everything else is a bug or an outage and keeps its
traceback."""


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
