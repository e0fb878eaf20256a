"""Read a job manifest file: the one place the trainer reads its spec from disk."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import SpecError
from ..core.spec import Job, parse_manifests


def load_job(path: str | Path) -> Job:
    """Read a job manifest from a YAML file and parse it; errors name the file and the field."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError(f"{p}: job file does not exist") from None
    return parse_manifests(text, str(p))
