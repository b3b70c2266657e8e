"""The error a user can fix in a config, and the value checks that raise it (one line: the
field, the value, what is allowed). Below both the config loader and the models, which declare
their own fields with these checks."""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A config a user can fix; the message names the file or field, the value and what is
    expected, in one line."""


def check_choice(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"config field {field}={short(value)}: expected one of {list(allowed)}")


def check_number(field: str, value, *, integer: bool, low, below=None, strict: bool = False):
    """value is an int (integer) or a finite number, >= low (> low if strict), < below."""
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if strict else value >= low) and (below is None or value < below)
    if not ok:
        bounds = (f"> {low}" if strict else f">= {low}") + (f" and < {below}" if below else "")
        raise ConfigError(f"config field {field}={short(value)}: expected {kind} {bounds}")


def short(value, limit: int = 80) -> str:
    """repr(value), cut in the middle when longer than `limit` characters (an error names a
    value; a 1 MB token must not fill the terminal)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...{text[-limit // 4:]} ({len(text):,} characters)"
