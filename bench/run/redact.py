"""Secrets never leave the process: passwords in storage and tracking URLs are masked.

`redact` masks the password of every URL (`scheme://user:PASSWORD@host`) and the value
of password=/token=/secret= query parameters. Because a library may also print a
password outside a URL, the passwords of the URLs a run uses are remembered
(`remember`) and masked wherever they appear. `install` applies `redact` to every log
record, every warning and everything written to stdout/stderr by Python code, which is
how a password stays out of logs even when a library prints a URL itself.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
import warnings
from typing import Any, TextIO
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"
# The password runs to the last '@' before the host, so an unescaped '@' in it is covered.
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@"
)
_SECRET_KEY = re.compile(r"password|passwd|pwd|token|secret", re.IGNORECASE)
_QUERY = re.compile(rf"(?P<key>{_SECRET_KEY.pattern})=(?P<val>[^&\s'\"]+)", re.IGNORECASE)
_MIN_SECRET = 4  # shorter remembered strings would mask ordinary text
_SECRETS: set[str] = set()


def remember(url: str | None) -> None:
    """Remember the password (and password= query values) of `url` so `redact` masks
    them anywhere, also outside a URL, in plain and percent-encoded form."""
    if not url:
        return
    found: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        found += [v for k, v in parse_qsl(parts.query) if _SECRET_KEY.search(k)]
    except ValueError:
        pass
    m = _USERINFO.search(url)
    if m and m["pw"]:
        found.append(m["pw"])
    for secret in found:
        for form in {secret, unquote(secret), quote(secret, safe="")}:
            if len(form) >= _MIN_SECRET:
                _SECRETS.add(form)


def redact(text: str | None) -> str | None:
    """Mask URL passwords, password= query values and every remembered secret."""
    if text is None:
        return None
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    out = _QUERY.sub(lambda m: f"{m['key']}={MASK}", out)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def format_exception(exc: BaseException) -> str:
    """A traceback with secrets masked (for crashes the CLI reports)."""
    return redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


class _RedactingStream:
    """Wraps stdout/stderr: every write is redacted; everything else is the real stream."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_installed = False


def install() -> None:
    """Redact every log record, warning and stdout/stderr write of this process."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            record.msg, record.args = redact(record.getMessage()), ()
        except Exception:  # a malformed record: leave it to logging's own error path
            return record
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = format_exception(record.exc_info[1]).rstrip("\n")
        return record

    logging.setLogRecordFactory(factory)
    show = warnings.formatwarning
    warnings.formatwarning = lambda *a, **k: redact(show(*a, **k))
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _RedactingStream):
            setattr(sys, name, _RedactingStream(stream))
