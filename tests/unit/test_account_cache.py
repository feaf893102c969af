"""The account cache writes an account to memcached once, not once per SUBSCRIBE."""

from __future__ import annotations

from typing import Any

from statestore.cache import ACCOUNT_REPUT_SECONDS, Cache
from statestore.domain.model import Account

BOB = Account(user="bob", domain="example.com", ha1="a" * 32)


class RecordingClient:
    def __init__(self, fail: bool = False) -> None:
        self.sets: list[str] = []
        self.fail = fail

    def set(self, key: str, value: str, expire: int, noreply: bool) -> None:
        if self.fail:
            raise ConnectionError("memcached down")
        self.sets.append(key)


def cache_with(client: Any) -> Cache:
    cache = Cache()
    cache._client = client
    return cache


def test_an_unchanged_account_is_put_once_within_the_window() -> None:
    client = RecordingClient()
    cache = cache_with(client)
    for second in range(10):
        cache.put_account(BOB, now=1000.0 + second)
    assert client.sets == ["blf:acct:bob@example.com"]


def test_a_changed_account_is_put_at_once() -> None:
    client = RecordingClient()
    cache = cache_with(client)
    cache.put_account(BOB, now=1000.0)
    cache.put_account(Account(user="bob", domain="example.com", ha1="b" * 32), now=1001.0)
    assert len(client.sets) == 2


def test_an_account_is_put_again_after_the_window() -> None:
    client = RecordingClient()
    cache = cache_with(client)
    cache.put_account(BOB, now=1000.0)
    cache.put_account(BOB, now=1000.0 + ACCOUNT_REPUT_SECONDS)
    assert len(client.sets) == 2


def test_after_a_memcached_failure_accounts_are_put_again() -> None:
    client = RecordingClient()
    cache = cache_with(client)
    cache.put_account(BOB, now=1000.0)
    cache._client = RecordingClient(fail=True)
    cache.put_account(Account(user="carol", domain="example.com", ha1="c" * 32), now=1001.0)
    cache._client = client
    cache.put_account(BOB, now=1002.0)
    assert client.sets == ["blf:acct:bob@example.com", "blf:acct:bob@example.com"]
