"""memcached: a read-through copy of what calls need when etcd cannot answer.

Calls must be routed while the store is down (BLF never breaks calling), so the
credentials and contacts each instance last read or wrote are kept here with their
own expiry. Every error is swallowed: a cache miss is the worst outcome.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pymemcache.client.base import Client  # type: ignore[import-untyped]

from statestore.domain.model import Account, Binding

ACCOUNT_TTL = 3600
# An account this process put unchanged less than this long ago is not put again: an
# initial SUBSCRIBE reads two accounts, and a phone subscribing to a 200-key BLF field
# would otherwise write the same two values hundreds of times. A memcached that lost them
# (restarted) has them again within this time.
ACCOUNT_REPUT_SECONDS = 300.0
_REMEMBERED_ACCOUNTS = 10000


class Cache:
    def __init__(self, endpoint: str = "127.0.0.1:11211", timeout: float = 0.2) -> None:
        host, _, port = endpoint.rpartition(":")
        self._server = (host or "127.0.0.1", int(port or 11211))
        self._timeout = timeout
        self._client: Any = None
        self._accounts_put: dict[str, tuple[Account, float]] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            # no_delay: a get right after a noreply set otherwise waits ~44 ms (Nagle + delayed ACK).
            self._client = Client(self._server, connect_timeout=self._timeout, timeout=self._timeout, no_delay=True)
        return self._client

    def _get(self, key: str) -> Any:
        try:
            raw = self.client.get(key)
        except Exception:  # noqa: BLE001 - every memcached failure is a cache miss (see above)
            self._client = None
            return None
        return None if raw is None else json.loads(raw)

    def _set(self, key: str, value: Any, ttl: int) -> bool:
        try:
            self.client.set(key, json.dumps(value), expire=max(1, ttl), noreply=True)
        except Exception:  # noqa: BLE001 - every memcached failure is swallowed (see above)
            self._client = None
            return False
        return True

    def put_account(self, account: Account, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        put = self._accounts_put.get(account.aor)
        if put is not None and put[0] == account and now - put[1] < ACCOUNT_REPUT_SECONDS:
            return
        if len(self._accounts_put) >= _REMEMBERED_ACCOUNTS:
            self._accounts_put.clear()
        if self._set(f"blf:acct:{account.aor}", account.to_dict(), ACCOUNT_TTL):
            self._accounts_put[account.aor] = (account, now)
        else:
            self._accounts_put.clear()  # memcached failed: it may have lost what we put

    def get_account(self, aor: str) -> Account | None:
        data = self._get(f"blf:acct:{aor}")
        return None if data is None else Account.from_dict(data)

    def put_bindings(self, aor: str, bindings: list[Binding], now: float) -> None:
        ttl = max((b.remaining(now) for b in bindings), default=1)
        self._set(f"blf:loc:{aor}", [b.to_dict() for b in bindings], ttl)

    def get_bindings(self, aor: str) -> list[Binding]:
        data = self._get(f"blf:loc:{aor}")
        return [] if data is None else [Binding.from_dict(item) for item in data]
