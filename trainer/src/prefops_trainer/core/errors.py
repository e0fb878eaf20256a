"""Error taxonomy. A :class:`UserError` is the user's to fix (bad spec, data or path, or data in storage that fails
an integrity check): the CLI prints its one-paragraph message and exits 2 with no traceback, and the operator does
not retry. A :class:`TransientError` is an outage that outlasted the retries: one paragraph, exit 1, and the
operator's restart policy applies. Everything else is a bug or a crash and keeps its traceback (exit 1)."""


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


class IntegrityError(UserError):
    """Data read from storage fails a safety or integrity check: an object key that would land outside its folder,
    a file whose sha256 differs from the one recorded when it was written, a file no record lists. Nothing of it is
    loaded; reading it again reads the same data, so it is permanent until someone removes or rewrites it."""


class TransientError(Exception):
    """Object storage or the Hub stayed unreachable (connection errors, 5xx, 429) through every retry: not the job's
    fault, so the phase exits 1 and a restart may succeed."""

    exit_code = 1
