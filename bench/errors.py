"""User-facing errors: one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input (flag, file, name). The CLI prints it and exits 2."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> UserError:
    choices = sorted(choices)
    return UserError(
        f"unknown {kind} '{name}'{did_you_mean(name, choices)}; known: {', '.join(choices)}"
    )
