"""One-line error messages: what every layer shows a person in a status bar, a dialog or a CLI line.

Lives in ``recorder/`` because that package is the bottom of the import order (recorder → robots →
policies → app → widgets, docs/ARCHITECTURE.md), so every layer can import this one helper instead of
keeping its own copy.
"""
from __future__ import annotations

__all__ = ["one_line", "SDK_MESSAGE_LIMIT"]

# Vendor SDKs (franky, the xArm SDK) can put kilobytes into one exception; drivers cut them here.
SDK_MESSAGE_LIMIT = 200


def one_line(exc: BaseException | str, *, first_line: bool = False, limit: int | None = None) -> str:
    """``exc``'s text on one line; the exception's type name when it has no text.

    By default all whitespace (newlines included) collapses to single spaces, so a multi-line
    message (an SDK error with details, an h5py traceback text) stays complete. ``first_line=True``
    keeps only the first non-blank line, unchanged: for messages whose first line is the summary and
    the rest a dump. ``limit``: texts of ``limit`` characters or more are cut to ``limit - 3`` plus
    "..." (vendor SDKs can return kilobytes)."""
    text = str(exc)
    if first_line:
        lines = text.strip().splitlines()
        out = lines[0] if lines else ""
    else:
        out = " ".join(text.split())
    if not out and isinstance(exc, BaseException):
        out = type(exc).__name__
    if limit is not None and len(out) >= limit:
        out = out[: max(0, limit - 3)] + "..."
    return out
