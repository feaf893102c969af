"""The etcd key layout: builders, prefixes and parse()."""

from __future__ import annotations

import pytest

from statestore import keys
from statestore.keys import ParsedKey, parse

AOR = "alice@example.com"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (keys.domain("example.com"), "/blf/domains/example.com"),
        (keys.account(AOR), "/blf/accounts/alice@example.com"),
        (keys.instance("node-a"), "/blf/instances/node-a"),
        (keys.legs_of(AOR), "/blf/legs/alice@example.com/"),
        (keys.leg(AOR, "node-a", "0123abcd"), "/blf/legs/alice@example.com/node-a/0123abcd"),
        (keys.regs_of(AOR), "/blf/regs/alice@example.com/"),
        (keys.reg(AOR, "b1"), "/blf/regs/alice@example.com/b1"),
        (keys.sub("sub-1"), "/blf/subs/sub-1"),
    ],
    ids=["domain", "account", "instance", "legs_of", "leg", "regs_of", "reg", "sub"],
)
def test_key_builders(key: str, expected: str) -> None:
    assert key == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (keys.domain("example.com"), ParsedKey("domains", "example.com")),
        (keys.account(AOR), ParsedKey("accounts", AOR)),
        (keys.instance("node-a"), ParsedKey("instances", "node-a")),
        (keys.leg(AOR, "node-a", "0123abcd"), ParsedKey("legs", "node-a/0123abcd", AOR)),
        (keys.reg(AOR, "b1"), ParsedKey("regs", "b1", AOR)),
        (keys.sub("sub-1"), ParsedKey("subs", "sub-1")),
        (keys.watcher_sub(AOR, "sub-1"), ParsedKey("watchers", "sub-1", AOR)),
        (keys.presentity_sub(AOR, "sub-1"), ParsedKey("watched", "sub-1", AOR)),
    ],
    ids=["domain", "account", "instance", "leg", "reg", "sub", "watcher index", "presentity index"],
)
def test_parse_every_kind(key: str, expected: ParsedKey) -> None:
    assert parse(key) == expected


@pytest.mark.parametrize(
    "key",
    ["", "/", "/blf", "/blf/", "blf/subs/x", "/other/subs/x", "/blfx/subs/x", "/blf/unknown/x", "/BLF/subs/x"],
)
def test_parse_foreign_keys_is_none(key: str) -> None:
    assert parse(key) is None


@pytest.mark.parametrize(
    ("prefix", "key"),
    [
        (keys.DOMAINS, keys.domain("example.com")),
        (keys.ACCOUNTS, keys.account(AOR)),
        (keys.INSTANCES, keys.instance("node-a")),
        (keys.legs_of(AOR), keys.leg(AOR, "node-a", "l1")),
        (keys.LEGS, keys.leg(AOR, "node-a", "l1")),
        (keys.regs_of(AOR), keys.reg(AOR, "b1")),
        (keys.REGS, keys.reg(AOR, "b1")),
        (keys.SUBS, keys.sub("s1")),
        (keys.ROOT, keys.sub("s1")),
        (keys.subs_of_watcher(AOR), keys.watcher_sub(AOR, "s1")),
        (keys.subs_of_presentity(AOR), keys.presentity_sub(AOR, "s1")),
    ],
)
def test_prefixes_cover_their_keys(prefix: str, key: str) -> None:
    assert key.startswith(prefix)


def test_an_account_prefix_does_not_cover_a_longer_account() -> None:
    assert not keys.leg("alice@example.com.au", "node-a", "l1").startswith(keys.legs_of(AOR))
    assert not keys.reg("alice@example.com.au", "b1").startswith(keys.regs_of(AOR))


def test_index_prefixes_do_not_cover_a_longer_account_nor_each_other() -> None:
    assert not keys.watcher_sub("alice@example.com.au", "s1").startswith(keys.subs_of_watcher(AOR))
    assert not keys.presentity_sub("alice@example.com.au", "s1").startswith(keys.subs_of_presentity(AOR))
    assert not keys.watcher_sub(AOR, "s1").startswith(keys.SUBS)
    assert not keys.presentity_sub(AOR, "s1").startswith(keys.WATCHERS)
