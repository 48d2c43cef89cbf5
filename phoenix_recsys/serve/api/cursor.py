"""Opaque, HMAC-signed feed cursors: pagination state travels with the client, never in the store.

A feed page returns `next_cursor`; the next request passes it back as `cursor`, and the feed skips
the posts the earlier pages served. The cursor carries everything that needs: the user id, when it
was issued and when it expires (wall-clock seconds), and the served post ids (at most `max_ids`, the
newest pages kept when a long session exceeds it). Reads therefore write nothing: a read key can no
longer insert rows for any user or spoil someone else's pagination (the old `session_id` did both).

Format (URL-safe, no padding): ``v1.<payload>.<tag>``; payload = zlib(JSON), tag = HMAC-SHA256 over
"v1." + payload with the server's secret. The tag is checked (constant time) before the payload is
decompressed or parsed, so an attacker's bytes never reach zlib or JSON; decompression is bounded
anyway. Every server and worker answering one API must share the secret, else a cursor issued by
one is refused by the others (`PHOENIX_CURSOR_SECRET`; unset: a random per-process secret, logged).
Rotation without breaking open sessions: set the new secret and keep the old one in
`cursor_previous_secrets` (`PHOENIX_CURSOR_PREVIOUS_SECRETS`, a JSON list) for at least `cursor_ttl_s`;
new cursors are signed with the new secret only, and old ones keep verifying until they expire.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

_log = logging.getLogger(__name__)

VERSION = "v1"
#: Longest cursor string accepted by the API schema (a full cursor of 5000 ids is well under it).
MAX_CURSOR_CHARS = 65_536
#: Most ids a cursor may be configured to carry (`cursor_max_ids`).
MAX_CURSOR_IDS = 5000
_MIN_SECRET_BYTES = 16


class CursorError(ValueError):
    """A cursor that is malformed, tampered with, expired or issued for another user."""


@dataclass(frozen=True)
class Cursor:
    """A verified cursor: its user, issue/expiry times (unix seconds) and the posts served so far."""

    user_id: int
    issued_at: int
    expires_at: int
    served: np.ndarray  # [N] int64, oldest page first


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class CursorCodec:
    """Issues cursors with one secret and verifies them with it or any previous one.

    Args:
      secret: the HMAC key (>= 16 bytes) new cursors are signed with; servers behind one API must share it.
      previous: earlier secrets still accepted when verifying (rotation), never used to sign.
      ttl_s: a cursor is refused this many seconds after it was issued.
      max_ids: most served ids one cursor carries; beyond it the oldest are dropped (so a very long
        session may see a post of its first pages again, never an unbounded cursor).
      clock: wall-clock seconds (tests pass their own).
    """

    def __init__(
        self,
        secret: bytes,
        *,
        previous: Sequence[bytes] = (),
        ttl_s: int = 3600,
        max_ids: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for i, s in enumerate((secret, *previous)):
            if len(s) < _MIN_SECRET_BYTES:
                what = "cursor secret" if i == 0 else f"previous cursor secret {i - 1}"
                raise ValueError(f"{what} must be at least {_MIN_SECRET_BYTES} bytes, got {len(s)}")
        if ttl_s < 1:
            raise ValueError(f"cursor ttl_s must be >= 1, got {ttl_s}")
        if not 1 <= max_ids <= MAX_CURSOR_IDS:
            raise ValueError(f"cursor max_ids must be in 1..{MAX_CURSOR_IDS}, got {max_ids}")
        # A derived key: the configured secret is never used raw, so it could double for something else.
        self._key = self._derive(secret)
        self._verify_keys = (self._key, *(self._derive(s) for s in previous))
        self.ttl_s = int(ttl_s)
        self.max_ids = int(max_ids)
        self._clock = clock

    @staticmethod
    def _derive(secret: bytes) -> bytes:
        return hmac.new(secret, b"phoenix-recsys feed cursor", hashlib.sha256).digest()

    @classmethod
    def from_settings(cls, settings: object) -> CursorCodec:
        """From `cursor_secret`, `cursor_previous_secrets`, `cursor_ttl_s`, `cursor_max_ids`; a random
        secret (warned) when `cursor_secret` is unset."""
        secret = getattr(settings, "cursor_secret", None)
        if secret is None:
            _log.warning(
                "cursor_secret is not set (PHOENIX_CURSOR_SECRET): feed cursors are signed with a random "
                "per-process secret, so a cursor from another server or worker, or from before a restart, is refused"
            )
            raw = secrets.token_bytes(32)
        else:
            raw = secret.get_secret_value().encode("utf-8")
        previous = [
            p.get_secret_value().encode("utf-8") for p in getattr(settings, "cursor_previous_secrets", ())
        ]
        return cls(
            raw,
            previous=previous,
            ttl_s=getattr(settings, "cursor_ttl_s", 3600),
            max_ids=getattr(settings, "cursor_max_ids", 1000),
        )

    def _tag(self, payload: str, key: bytes | None = None) -> str:
        msg = f"{VERSION}.{payload}".encode("ascii")
        return _b64e(hmac.new(self._key if key is None else key, msg, hashlib.sha256).digest())

    def issue(self, user_id: int, served: Sequence[int] | np.ndarray) -> str:
        """A cursor for `user_id` after serving `served` (earlier pages' ids first, duplicates dropped)."""
        ids = list(dict.fromkeys(int(p) for p in np.asarray(served, np.int64).tolist()))[-self.max_ids :]
        now = int(self._clock())
        body = {"u": int(user_id), "iat": now, "exp": now + self.ttl_s, "ids": ids}
        payload = _b64e(zlib.compress(json.dumps(body, separators=(",", ":")).encode("ascii"), 6))
        return f"{VERSION}.{payload}.{self._tag(payload)}"

    def verify(self, token: str, user_id: int) -> Cursor:
        """The cursor `token` if it is ours, intact, unexpired and issued for `user_id`.

        Raises:
          CursorError: with a message saying which check failed.
        """
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or parts[0] != VERSION or not parts[1] or not parts[2]:
            raise CursorError(f"malformed cursor (expected {VERSION}.<payload>.<signature>)")
        payload, tag = parts[1], parts[2]
        try:
            tag.encode("ascii")
            payload.encode("ascii")
        except UnicodeEncodeError:
            raise CursorError("malformed cursor (not URL-safe base64)") from None
        # Every key is tried (no early exit), so timing does not tell which secret signed a cursor.
        matches = [hmac.compare_digest(self._tag(payload, k), tag) for k in self._verify_keys]
        if not any(matches):
            raise CursorError(
                "cursor signature does not match (tampered with, or issued with another secret)"
            )
        try:
            z = zlib.decompressobj()
            raw = z.decompress(_b64d(payload), 1 << 20)
            if z.unconsumed_tail:
                raise CursorError("malformed cursor (payload too large)")
            body = json.loads(raw)
            uid, iat, exp, ids = int(body["u"]), int(body["iat"]), int(body["exp"]), body["ids"]
            if not isinstance(ids, list) or len(ids) > MAX_CURSOR_IDS or not all(type(p) is int for p in ids):
                raise CursorError("malformed cursor (bad served ids)")
            served = np.asarray(ids, np.int64)
        except CursorError:
            raise
        except (binascii.Error, zlib.error, ValueError, KeyError, TypeError, OverflowError):
            # Only our own signed bytes get here, so this means a bug or a changed format, not an attack.
            raise CursorError("malformed cursor payload") from None
        if uid != int(user_id):
            raise CursorError(f"cursor was issued for another user, not user_id {user_id}")
        if int(self._clock()) >= exp:
            raise CursorError("cursor expired; request the first page again")
        return Cursor(user_id=uid, issued_at=iat, expires_at=exp, served=served)
