"""API keys: which header carries one, and a constant-time check against the configured digests.

Keys are configured by ``API_KEYS`` / ``API_KEYS_FILE`` (:mod:`fetoolkit.serve.settings`) and
kept only as sha256 digests. A presented key is hashed and compared with every digest by
``hmac.compare_digest`` (no early exit), so neither the key's length nor its prefix shows in the
timing. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import Scope


def presented_key(scope: Scope) -> str | None:
    """The key of ``X-API-Key`` or ``Authorization: Bearer <key>``; None when neither is sent."""
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def key_matches(key: str | None, digests: tuple[str, ...]) -> bool:
    """Whether ``key`` is one of the keys whose sha256 hex digests are ``digests``."""
    if key is None:
        return False
    got = hashlib.sha256(key.encode("utf-8")).hexdigest().encode()
    ok = False
    for d in digests:
        ok |= hmac.compare_digest(got, d.encode())
    return ok
