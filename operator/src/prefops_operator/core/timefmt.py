"""Kubernetes timestamps: RFC 3339 in UTC with whole seconds (``2026-01-02T03:04:05Z``)."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(value: object) -> datetime | None:
    """Parse an API timestamp; ``None`` (or anything unparsable) gives ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> datetime:
    """Now, truncated to whole seconds like every timestamp the API stores."""
    return datetime.now(UTC).replace(microsecond=0)
