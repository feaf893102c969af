"""memcached: a read-through copy of what calls need when etcd cannot answer.

Calls must be routed while the store is down (BLF never breaks calling), so the
credentials and contacts each instance last read or wrote are kept here with their
own expiry. Every error is swallowed: a cache miss is the worst outcome.
"""

from __future__ import annotations

import json
from typing import Any

from pymemcache.client.base import Client  # type: ignore[import-untyped]

from statestore.domain.model import Account, Binding

ACCOUNT_TTL = 3600


class Cache:
    def __init__(self, endpoint: str = "127.0.0.1:11211", timeout: float = 0.2) -> None:
        host, _, port = endpoint.rpartition(":")
        self._server = (host or "127.0.0.1", int(port or 11211))
        self._timeout = timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = Client(self._server, connect_timeout=self._timeout, timeout=self._timeout)
        return self._client

    def _get(self, key: str) -> Any:
        try:
            raw = self.client.get(key)
        except Exception:  # noqa: BLE001 - every memcached failure is a cache miss (see above)
            self._client = None
            return None
        return None if raw is None else json.loads(raw)

    def _set(self, key: str, value: Any, ttl: int) -> None:
        try:
            self.client.set(key, json.dumps(value), expire=max(1, ttl), noreply=True)
        except Exception:  # noqa: BLE001 - every memcached failure is swallowed (see above)
            self._client = None

    def put_account(self, account: Account) -> None:
        self._set(f"blf:acct:{account.aor}", account.to_dict(), ACCOUNT_TTL)

    def get_account(self, aor: str) -> Account | None:
        data = self._get(f"blf:acct:{aor}")
        return None if data is None else Account.from_dict(data)

    def put_bindings(self, aor: str, bindings: list[Binding], now: float) -> None:
        ttl = max((b.remaining(now) for b in bindings), default=1)
        self._set(f"blf:loc:{aor}", [b.to_dict() for b in bindings], ttl)

    def get_bindings(self, aor: str) -> list[Binding]:
        data = self._get(f"blf:loc:{aor}")
        return [] if data is None else [Binding.from_dict(item) for item in data]
