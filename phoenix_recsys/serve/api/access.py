"""The access model: hashed keys with scopes, reloadable without a restart, and per-key rate limits.

Only SHA-256 digests of keys are held (`ServeSettings` drops the secrets on validation). A presented
key is hashed and compared with every digest by `hmac.compare_digest`, all of them every time, so
neither the timing nor the order of keys tells an attacker anything. Rotation: add the new key,
reload (SIGHUP or POST /v1/admin/reload-keys), move clients, remove the old key, reload again; the
ring is swapped in one assignment, so no request ever sees half a ring.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from phoenix_recsys.serve.settings import ApiKey, Scope, ServeSettings


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: a key's name and scopes, or an anonymous client (`anonymous=True`)."""

    name: str
    scopes: frozenset[Scope]
    anonymous: bool = False


class KeyRing:
    """The configured keys as digests; `lookup` finds a presented key in constant time per key."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._entries = tuple((bytes.fromhex(k.sha256), Principal(k.name, frozenset(k.scopes))) for k in keys)

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> KeyRing:
        """The ring of every key in `settings` (`api_key` and `api_keys`)."""
        return cls(settings.keys())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        """The keys' names (never the keys)."""
        return [p.name for _, p in self._entries]

    def lookup(self, presented: str) -> Principal | None:
        """The principal of a presented key, or None; every digest is compared, match or not."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found = None
        for d, principal in self._entries:
            if hmac.compare_digest(digest, d):
                found = principal
        return found


class RateLimiter:
    """Token buckets by principal: `burst` tokens, refilled at `per_s`; thread-safe and bounded.

    At most `max_buckets` buckets are kept (anonymous clients get one per address); the least
    recently used is dropped first, which can only ever hand a client a fresh (full) bucket.
    """

    def __init__(self, per_s: float, burst: int, *, max_buckets: int = 10_000, clock=time.monotonic) -> None:
        self.per_s, self.burst, self.max_buckets, self._clock = per_s, burst, max_buckets, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # name -> (tokens, at)
        self._lock = threading.Lock()

    def acquire(self, name: str) -> float:
        """Take one token for `name`: 0.0 if allowed, else the seconds until one is available."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(name, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.per_s
            self._buckets[name] = (tokens, now)
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        return wait


def retry_after_header(wait_s: float) -> str:
    """Retry-After in whole seconds, never 0 (a client told 0 would retry at once)."""
    return str(max(1, math.ceil(wait_s)))
