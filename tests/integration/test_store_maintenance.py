"""A bounded store (issue 8) on a real etcd: `blfctl store health` and `store maintain`,
the NOSPACE alarm and its recovery, and the SIP path's copies (directory, notifier) that
resync when a compaction leaves their watch behind."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import etcd3  # type: ignore[import-untyped]
import pytest

from bench.etcd_cluster import ETCD_BINARY, HOST, free_ports
from statestore import codec, keys
from statestore.cli import main
from statestore.domain.directory import rules_to_record
from statestore.domain.errors import StoreUnavailable
from statestore.domain.model import Account, Direction, Leg, LegState, Party
from statestore.domain.policy import DomainRules
from statestore.etcd_store import EtcdStore, split_endpoint
from statestore.maintenance import KINDS
from tests.fakeksr import FakeContext, FakeKSR, FakeSettings, back_htables, install
from tests.integration.conftest import START_TIMEOUT, _EtcdOutput, _log_tail, _stop

# etcd3 0.12's watch thread ends by raising once its store is closed (the kemi modules close
# it on a broken watch); etcd_store quiets that in Kamailio, pytest's thread hook reports it.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")

ALICE = Account("alice", "acme.example", "0" * 32, "1" * 64)
# The smallest quota worth testing: etcd's empty database file is already a few hundred KB.
TINY_QUOTA = 16 * 1024 * 1024
VALUE = b"x" * (512 * 1024)  # under etcd's 1.5 MB request limit
HEALTH_FIELDS = {
    "db_size", "db_size_in_use", "quota", "revision", "compact_revision", "last_compaction", "last_defrag",
    "alarms", "keys", "keys_by_kind", "leases",
}


def blfctl(endpoint: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--etcd", endpoint, *args])
    return code, capsys.readouterr().out


@pytest.fixture
def tiny_etcd(tmp_path: Any) -> Iterator[str]:
    """An etcd of our own with a 16 MB quota and no auto-compaction: it fills up."""
    if not os.access(ETCD_BINARY, os.X_OK):
        pytest.skip(f"no etcd binary at {ETCD_BINARY}")
    client_port, peer_port = free_ports(2)
    client, peer = f"http://{HOST}:{client_port}", f"http://{HOST}:{peer_port}"
    command = [
        ETCD_BINARY, "--name", "tiny", "--data-dir", str(tmp_path / "data"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"tiny={peer}", "--quota-backend-bytes", str(TINY_QUOTA),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True,
    )
    assert process.stdout is not None
    output = _EtcdOutput(process.stdout, tmp_path / "etcd.log")
    output.start()
    try:
        if output.signals.get(timeout=START_TIMEOUT) != _EtcdOutput.READY:
            pytest.fail(f"etcd did not start:\n{_log_tail(tmp_path / 'etcd.log')}")
        yield f"{HOST}:{client_port}"
    finally:
        _stop(process)
        output.join(timeout=10)
        process.stdout.close()


def fill_until_nospace(endpoint: str) -> int:
    """Overwrite one key with 512 KB values until etcd refuses: its history fills the quota."""
    host, port = split_endpoint(endpoint)
    client = etcd3.client(host=host, port=port, timeout=10)
    try:
        for count in range(1, 200):
            try:
                client.put("/blf/filler", VALUE)
            except Exception as exc:  # noqa: BLE001 - the refusal is what we wait for
                assert "database space exceeded" in str(exc) or "RESOURCE_EXHAUSTED" in repr(exc), exc
                return count
    finally:
        client.close()
    raise AssertionError("etcd never raised NOSPACE")


def test_nospace_fails_every_write_until_blfctl_store_maintain(
    tiny_etcd: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = EtcdStore(tiny_etcd, timeout=2.0)
    try:
        puts = fill_until_nospace(tiny_etcd)
        assert puts > 10
        # A write of the SIP path is refused as an outage (a 503), never a traceback.
        with pytest.raises(StoreUnavailable, match="database space exceeded"):
            store.add_domain("acme.example")
        assert store.domains() == []  # reads still work
        code, out = blfctl(tiny_etcd, capsys, "store", "health", "--json")
        report = json.loads(out)
        assert code == 1
        assert [alarm.split()[0] for alarm in report["alarms"]] == ["NOSPACE"]
        assert report["quota"] == TINY_QUOTA
        assert report["db_size"] >= TINY_QUOTA * 0.9

        code, out = blfctl(tiny_etcd, capsys, "store", "maintain")
        assert code == 0
        assert "compacted to revision" in out and "defragmented" in out and "disarmed NOSPACE" in out

        store.add_domain("acme.example")  # writes work again
        assert store.domains() == ["acme.example"]
        code, out = blfctl(tiny_etcd, capsys, "store", "health", "--json")
        report = json.loads(out)
        assert code == 0 and report["alarms"] == []
        assert report["db_size"] < TINY_QUOTA / 2
        assert report["compact_revision"] > puts - 1
        assert report["last_defrag"] is not None and report["last_compaction"] is not None
    finally:
        store.close()


def test_health_counts_keys_of_each_kind_without_reading_values_and_the_leases(
    store: EtcdStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store.add_domain("acme.example")
    store.add_account(ALICE, ["101"])
    lease = store.grant_lease(30)
    store.announce_instance("ks1", {"sip": "127.0.0.1:5071"}, lease)
    for n in range(3):
        store.client.put(keys.leg(ALICE.aor, "ks1", f"leg-{n}"), b"{}", lease=lease)
    code, out = blfctl(store.endpoint, capsys, "store", "health", "--json")
    report = json.loads(out)
    assert code == 0
    assert set(report) >= HEALTH_FIELDS
    assert set(report["keys_by_kind"]) == set(KINDS)
    assert {kind: n for kind, n in report["keys_by_kind"].items() if n} == {
        "legs": 3, "accounts": 1, "aliases": 1, "domains": 1, "instances": 1,
    }
    assert report["keys"] == 7
    assert report["leases"] >= 1
    assert report["revision"] >= report["compact_revision"] >= 0
    assert 0 < report["db_size_in_use"] <= report["db_size"]
    # Counting is count-only reads: no value travels, whatever the values' size.
    sent: list[Any] = []
    original = store._read

    def spy(reads: Any, serializable: bool = False) -> tuple[int, list[Any]]:
        sent.extend(reads)
        return original(reads, serializable)

    store._read = spy  # type: ignore[method-assign]
    total, _ = store.key_counts()
    assert total == 7 and sent and all(read.count_only for read in sent)
    code, text = blfctl(store.endpoint, capsys, "store", "health")
    assert code == 0 and "legs 3" in text and "alarms     none" in text


def test_compact_revision_is_what_etcd_compacted_to(store: EtcdStore) -> None:
    for n in range(5):
        store.client.put(keys.sub(f"s{n}"), b"{}")
    revision = store.revision()
    store.client.compact(revision - 2)
    assert store.compact_revision() == revision - 2
    assert store.compact(revision)
    assert store.compact_revision() == revision
    assert not store.compact(revision - 1)  # compacted already: nothing to do, no error


def test_maintain_if_needed_leaves_a_small_healthy_store_alone(
    store: EtcdStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store.add_domain("acme.example")
    code, out = blfctl(store.endpoint, capsys, "store", "maintain", "--if-needed")
    assert code == 0 and "nothing needed" in out


def test_the_schedule_maintains_every_period_until_stopped(
    store: EtcdStore, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import statestore.cli_store

    stop = threading.Event()
    rounds: list[bool] = []
    real = statestore.cli_store.maintain

    def counted(target: EtcdStore, if_needed: bool) -> bool:
        rounds.append(if_needed)
        if len(rounds) == 2:
            stop.set()
        return real(target, if_needed)

    monkeypatch.setattr(statestore.cli_store, "maintain", counted)
    worker = threading.Thread(target=statestore.cli_store.maintain_every, args=(store.endpoint, 0.05, True, stop))
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and rounds == [True, True]
    assert capsys.readouterr().out.count("nothing needed") == 2


def test_health_of_an_unreachable_etcd_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    (port,) = free_ports(1)
    code, _ = blfctl(f"{HOST}:{port}", capsys, "store", "health", "--json")
    assert code == 3


# --- the SIP path's watches after a compaction ---------------------------------------------


class _Settings(FakeSettings):
    notifier_wait = 0.05


def compact_between_snapshot_and_watch(store: EtcdStore, writes: Callable[[], None]) -> None:
    """Make the next watch start behind a compaction: between the snapshot and the watch,
    the store moves on and is compacted to its current revision."""
    original = store.watch_prefixes
    done: list[bool] = []

    def late_watch(revision: int, callback: Any, prefixes: Any) -> list[int]:
        if not done:
            done.append(True)
            writes()
            store.client.compact(store.revision())
        return original(revision, callback, prefixes)

    store.watch_prefixes = late_watch  # type: ignore[method-assign]


def tick_until(tick: Callable[[], None], ready: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "not reached in time"
        tick()


@pytest.fixture
def ksr() -> Iterator[FakeKSR]:
    fake = install()
    back_htables(fake)
    yield fake


def test_the_directory_copy_resyncs_when_a_compaction_leaves_its_watch_behind(
    store: EtcdStore, ksr: FakeKSR
) -> None:
    import blf_directory
    import blf_directory_keeper

    store.client.put(keys.domain("acme.example"), codec.encode(rules_to_record(DomainRules("acme.example"))))
    store.add_account(ALICE)

    def writes() -> None:
        store.add_aliases(ALICE.aor, ["101"])
        store.add_aliases(ALICE.aor, ["102"])

    compact_between_snapshot_and_watch(store, writes)
    keeper = blf_directory_keeper.Keeper(FakeContext(store, _Settings()))  # type: ignore[arg-type]
    view = blf_directory.SharedDirectory(FakeContext(store, _Settings()))  # type: ignore[arg-type]
    tick_until(keeper.tick, lambda: "watch broken" in ksr.logged("warn"))
    tick_until(keeper.tick, lambda: view.alias("acme.example", "102") == ALICE.aor)
    # A watch that is caught up survives a compaction to the current revision (what
    # `blfctl store maintain` does): no resync, the next change arrives.
    store.client.put(keys.sub("unwatched"), b"{}")
    assert store.compact(store.revision())
    store.add_aliases(ALICE.aor, ["103"])
    tick_until(keeper.tick, lambda: view.alias("acme.example", "103") == ALICE.aor)
    assert ksr.logged("warn").count("watch broken") == 1


def test_the_notifier_resyncs_when_a_compaction_leaves_its_watch_behind(
    store: EtcdStore, ksr: FakeKSR, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blf_notifier

    # The instance lease confirmed a moment ago (the lease keeper's job, not run here): a
    # notifier whose lease is unconfirmed sends nothing and does not read its watch.
    monkeypatch.setattr(
        blf_notifier, "shared_lease_confirmed", lambda zone=None: (1, blf_notifier.time.monotonic() - 0.1)
    )

    def writes() -> None:
        for n in (1, 2):
            leg = Leg(
                account=ALICE.aor, instance="ks2", leg_id=f"leg-{n}", version=1, state=LegState.EARLY,
                direction=Direction.RECIPIENT, call_id=f"call-{n}", local_tag="", remote_tag="ftag",
                local=Party(f"sip:{ALICE.aor}"), remote=Party("sip:carol@acme.example"),
            )
            store.client.put(keys.leg(ALICE.aor, "ks2", leg.leg_id), codec.encode_leg(leg))

    compact_between_snapshot_and_watch(store, writes)
    notifier = blf_notifier.Notifier(FakeContext(store, _Settings()))  # type: ignore[arg-type]
    tick_until(notifier.tick, lambda: "watch broken" in ksr.logged("warn"))
    tick_until(notifier.tick, lambda: notifier.synced)
    assert ksr.logged("info").count("synced at revision") == 2
    assert len(notifier.mirror.legs.get(ALICE.aor, {})) == 2
