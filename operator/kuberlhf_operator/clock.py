"""Timestamps as the API server writes them (RFC 3339 in UTC, whole seconds), and spans between them.

Decisions take `now` as such a string, like every time they read from objects, so that they stay
pure functions a test can run at any moment it likes.
"""

from __future__ import annotations

from datetime import datetime, timezone

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime(FORMAT)


def seconds_between(start: str, end: str) -> float:
    """end - start in seconds; either may carry fractions or an offset (fromisoformat reads both)."""
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
