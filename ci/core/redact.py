"""Secret masking: every value registered here is replaced by `***` in anything we print.

Adapters register secrets as soon as they read them (registry passwords, tokens);
reports, logs and error messages pass text through `redact()` before it leaves the process.
"""

from __future__ import annotations

import threading

MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()


def register(value: str | None) -> None:
    """Remember a secret value (ignores empty or very short strings that would mask noise)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Text with every registered secret masked."""
    if not text or not _secrets:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def registered() -> frozenset[str]:
    with _lock:
        return frozenset(_secrets)
