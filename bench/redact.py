"""Secrets never leave the process: passwords in storage and tracking URLs are masked."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_QUERY = re.compile(r"(?i)(?P<key>password|passwd|pwd|token|secret)=(?P<val>[^&\s]+)")


def redact(text: str | None) -> str | None:
    """Replace the password part of every URL (and password= query values) with ***."""
    if text is None:
        return None
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY.sub(lambda m: f"{m['key']}=***", out)
