"""`make soak`: steady load for a long while; memory must stay flat, the store bounded, and
nothing orphaned when the load stops (issue 8).

Runs where it is started: `bench/in_netns.sh` puts it in a network namespace of its own
(the lab takes its usual ports there). It brings up a lab (2 instances, etcd, memcached)
under its own var dir, provisions accounts, and then for --minutes drives at once:

- calls at --rate per second, callers on ks1 and callees on ks2: 70 % answered and hung up
  after 2-8 s, 15 % rejected by the callee (486), 15 % cancelled while ringing; calls to a
  callee whose registration lapsed are rejected by the proxy;
- registrations with Expires 60 (the registrar's minimum), refreshed at half-time; now and
  then one lapses (not refreshed for longer than its expiry) or is removed (Expires: 0);
- subscriptions (Event: dialog, 2 watchers per callee, on ks1 and ks2) with short Expires
  (--sub-expires, default 60-120 s), refreshed 0-2 times in-dialog, then half of them
  unsubscribed and half left to expire, then subscribed anew;
- a restart of ks2 (SIGKILL of its process group, then start) a fifth of the way in.

Every 10 s it samples the store (etcd's database size and revision, keys by kind, leases,
and the orphan check of statestore.orphans), every Kamailio process's memory (PSS, RSS,
USS from /proc, its role from core.psx, pkg.stats) and each instance's core.shmmem, etcd's
and memcached's RSS and memcached's item count. When the load stops, every registration
and subscription is ended or left to expire, and it waits until the store holds only
provisioning and the instances (find_leftovers), up to the longest expiry plus a margin.

Verdict: a figure fails when the slope fitted over the second half of the load (and at least
RESTART_SETTLE_S after the restart) is a trend and would exhaust its limit within
HORIZON_DAYS (docs/soak.md says why); the run fails when orphans remain. Exit status 1 on failure.

    python -m bench.soak [--minutes 30] [--rate 5] [--quick]

Results: bench/results/soak-<UTC stamp>.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import Client, Msg, Phone, _address
from bench.run import DOMAIN, KS1, KS2, Ours, describe, group_processes, machine, password
from statestore import keys
from statestore.orphans import Snapshot, StoredKey, StoredLease, find_leftovers, find_orphans
from tests.sipua import challenge_params

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ETCD = ("127.0.0.1", 2379)
MEMCACHED = ("127.0.0.1", 11211)
SAMPLE_SECONDS = 10.0
CALLEES, WATCHERS, CALLERS = 40, 10, 10
PRESENTITIES_PER_WATCHER = 8  # 10 watchers x 8 = 2 watchers per callee
REG_EXPIRES = 60  # the registrar's Min-Expires (statestore/domain/registrar.py)
# A fitted growth that would exhaust a figure's limit within this many days fails the run.
HORIZON_DAYS = 30.0
# A slope is a trend when it is this many standard errors above zero.
SIGNIFICANT = 3.0
# A key or a lease costs the database at least this much (value, index, bbolt page share).
BYTES_PER_KEY = 1024
# After the restart, time for the restarted instance to warm up before the slope window
# (its SIP workers' USS grew for about 6 minutes after a start, then stayed flat; the dead
# instance's lease expires and its subscriptions are taken over within seconds): at most
# this, at most half of what is left of the load after the restart.
RESTART_SETTLE_S = 600.0


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


# --- the load ------------------------------------------------------------------------------


class SoakPhone(Phone):
    """A Phone that remembers its INVITEs (branch and CSeq): a CANCEL and the ACK of a
    non-2xx answer reuse them (RFC 3261 §9.1, §17.1.1.3)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.invites: dict[str, tuple[str, int, str, str, str]] = {}  # call-id -> uri, cseq, from tag, to, branch

    def build(self, method: str, uri: str, call_id: str, cseq: int, from_tag: str, to: str, to_tag: str = "",
              extra: list[str] | None = None, branch: str = "", body: bytes = b"") -> bytes:
        branch = branch or "z9hG4bK" + uuid.uuid4().hex[:16]
        if method == "INVITE":
            self.invites[call_id] = (uri, cseq, from_tag, to, branch)
        return super().build(method, uri, call_id, cseq, from_tag, to, to_tag, extra, branch, body)

    def cancel_bytes(self, call_id: str) -> tuple[bytes, int] | None:
        sent = self.invites.get(call_id)
        if sent is None:
            return None
        uri, cseq, from_tag, to, branch = sent
        lines = [
            f"CANCEL {uri} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            f"From: <{self.aor}>;tag={from_tag}", f"To: <{to}>", f"Call-ID: {call_id}", f"CSeq: {cseq} CANCEL",
            "Max-Forwards: 70", "Content-Length: 0", "", "",
        ]
        return "\r\n".join(lines).encode(), cseq


@dataclass
class Counts:
    values: dict[str, int] = field(default_factory=dict)

    def add(self, what: str) -> None:
        self.values[what] = self.values.get(what, 0) + 1


class SoakClient(Client):
    """Callees that answer, reject or ring until cancelled as the Call-ID says (the caller
    chooses the fate: `ans-`, `busy-`, `cancel-`), watchers that answer every NOTIFY."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__(DOMAIN, password)
        self.stop = stop
        self.counts = Counts()
        self.ringing: dict[str, tuple[Phone, Msg, str]] = {}
        self.notify_contact: dict[str, str] = {}  # subscription call-id -> Contact of its last NOTIFY

    async def soak_phone(self, user: str, proxy: tuple[str, int]) -> SoakPhone:
        loop = asyncio.get_running_loop()
        phone = SoakPhone(self, user, self.password_of(user), proxy)
        await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
        self.phones.append(phone)
        return phone

    async def pause(self, seconds: float) -> bool:
        """Sleep; True when the load is stopping meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    # --- callees ---------------------------------------------------------------------------

    def callee_request(self, phone: Phone, msg: Msg) -> None:
        call_id = msg.h("call-id")
        if msg.method == "INVITE" and call_id not in self.dialogs and not call_id.startswith("ans-"):
            self.dialogs[call_id] = (phone, msg)
            tag = uuid.uuid4().hex[:10]
            phone.send(phone.response(msg, 180, "Ringing", tag, dialog=True), msg.source)
            if call_id.startswith("busy-"):
                asyncio.get_running_loop().call_later(0.3, self._final, phone, msg, tag, 486, "Busy Here")
            else:
                self.ringing[call_id] = (phone, msg, tag)
            return
        if msg.method == "CANCEL":
            phone.send(phone.response(msg, 200, "OK"), msg.source)
            ringing = self.ringing.pop(call_id, None)
            if ringing is not None:
                self._final(*ringing, 487, "Request Terminated")
            return
        super().callee_request(phone, msg)

    def _final(self, phone: Phone, invite: Msg, tag: str, status: int, reason: str) -> None:
        phone.send(phone.response(invite, status, reason, tag, dialog=True), invite.source)
        self.dialogs.pop(invite.h("call-id"), None)
        self.ringing.pop(invite.h("call-id"), None)

    # --- calls ------------------------------------------------------------------------------

    async def place_call(self, caller: SoakPhone, callee: str, fate: str, hold: float) -> None:
        uri = f"sip:{callee}@{self.domain}"
        call_id = f"{fate}-{uuid.uuid4().hex}"
        canceller = asyncio.create_task(self._cancel_when_ringing(caller, call_id)) if fate == "cancel" else None
        try:
            answer, call_id, from_tag, cseq = await caller.request(
                "INVITE", uri, uri, ["Content-Type: application/sdp"], call_id=call_id)
            if canceller is not None:
                await canceller
            if answer is None:
                self.counts.add("call timeout")
                return
            if answer.status >= 300:
                _, _, _, _, branch = caller.invites[call_id]
                caller.send(caller._ack_for_failure(uri, call_id, cseq, from_tag, uri, answer.to_tag(), branch))
                self.counts.add({486: "call busy", 487: "call cancelled"}.get(answer.status,
                                                                            f"call rejected {answer.status}"))
                return
            await self._talk_and_hang_up(caller, answer, uri, call_id, from_tag, cseq, hold)
        finally:
            caller.invites.pop(call_id, None)

    async def _cancel_when_ringing(self, caller: SoakPhone, call_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while loop.time() < deadline:  # the INVITE that got through the 407 is ringing
            sent = caller.invites.get(call_id)
            ringing = caller.provisional.get((call_id, sent[1], "INVITE")) if sent else None
            if ringing is not None and ringing.is_set():
                break
            await asyncio.sleep(0.05)
        else:
            return
        await asyncio.sleep(random.uniform(0.5, 2.0))
        cancel = caller.cancel_bytes(call_id)
        if cancel is not None and (call_id, cancel[1], "INVITE") in caller.pending:
            answer = await caller.transaction("CANCEL", "", call_id, cancel[1], cancel[0])
            if answer is None or answer.status != 200:
                self.counts.add(f"CANCEL {answer.status if answer else 'timeout'}")

    async def _talk_and_hang_up(self, caller: Phone, answer: Msg, uri: str, call_id: str, from_tag: str, cseq: int,
                                hold: float) -> None:
        to_tag = answer.to_tag()
        routes: list[str] = []
        for value in answer.all("record-route"):
            routes += [part.strip() for part in value.split(",") if part.strip()]
        routes.reverse()
        contact = re.search(r"<([^>]+)>", answer.h("contact"))
        target = contact.group(1) if contact else uri
        extra = [f"Route: {', '.join(routes)}"] if routes else []
        nexthop = _address(routes[0] if routes else target, caller.proxy)
        ack = caller.build("ACK", target, call_id, cseq, from_tag, uri, to_tag, extra=extra)
        self._acks_sent[call_id] = (ack, nexthop)
        caller.send(ack, nexthop)
        self.counts.add("call answered")
        try:
            await asyncio.sleep(hold)  # not cut short by the stop: every call is hung up
            bye_cseq = next(caller.cseq)
            bye = caller.build("BYE", target, call_id, bye_cseq, from_tag, uri, to_tag, extra=extra)
            done = await caller.transaction("BYE", target, call_id, bye_cseq, bye, to=nexthop)
            if done is None or done.status != 200:
                self.counts.add(f"BYE {done.status if done else 'timeout'}")
        finally:
            self._acks_sent.pop(call_id, None)

    # --- registrations ----------------------------------------------------------------------

    async def keep_registered(self, phone: Phone, index: int) -> None:
        """Register, refresh at half-time; now and then lapse or unregister. At the stop,
        even callees unregister and odd ones let their binding lapse."""
        call_id, from_tag = uuid.uuid4().hex, uuid.uuid4().hex[:10]
        while not self.stop.is_set():
            if not await self._register(phone, REG_EXPIRES, call_id, from_tag):
                if await self.pause(random.uniform(3, 6)):
                    break
                continue
            fate = random.random()
            if fate < 0.08:
                self.counts.add("REGISTER left to lapse")
                if await self.pause(REG_EXPIRES + random.uniform(10, 30)):
                    return  # lapses anyway
            elif fate < 0.16:
                if await self.pause(random.uniform(5, 20)):
                    break
                await self._register(phone, 0, call_id, from_tag)
                if await self.pause(random.uniform(5, 15)):
                    return
            elif await self.pause(REG_EXPIRES * random.uniform(0.45, 0.6)):
                break
        if index % 2 == 0:
            await self._register(phone, 0, call_id, from_tag)

    async def _register(self, phone: Phone, expires: int, call_id: str, from_tag: str) -> bool:
        answer, *_ = await phone.request("REGISTER", f"sip:{self.domain}", phone.aor, [f"Expires: {expires}"],
                                         call_id=call_id, from_tag=from_tag)
        ok = answer is not None and answer.status == 200
        self.counts.add(f"REGISTER {'removed' if expires == 0 else 'ok'}" if ok else
                        f"REGISTER {answer.status if answer else 'timeout'}")
        return ok

    # --- subscriptions ----------------------------------------------------------------------

    def watcher_handler(self) -> Callable[[Phone, Msg], None]:
        def handle(phone: Phone, msg: Msg) -> None:
            phone.send(phone.response(msg, 200, "OK"), msg.source)
            if msg.method != "NOTIFY":
                return
            self.counts.add("NOTIFY")
            call_id = msg.h("call-id")
            if "terminated" in msg.h("subscription-state"):
                self.counts.add("NOTIFY terminated")
            contact = re.search(r"<([^>]+)>", msg.h("contact"))
            if contact and call_id in self.notify_contact:
                self.notify_contact[call_id] = contact.group(1)

        return handle

    async def keep_subscribed(self, phone: Phone, presentity: str, expires_range: tuple[int, int],
                              index: int) -> None:
        """Subscribe, refresh 0-2 times, then unsubscribe or let it expire; again. At the
        stop, even pairs unsubscribe and odd ones let the subscription expire."""
        uri = f"sip:{presentity}@{self.domain}"
        headers = ["Event: dialog", "Accept: application/dialog-info+xml"]
        await self.pause(random.uniform(0, 10))  # spread the first SUBSCRIBEs
        while not self.stop.is_set():
            expires = random.randint(*expires_range)
            call_id = uuid.uuid4().hex
            self.notify_contact[call_id] = ""
            answer, call_id, from_tag, _ = await phone.request(
                "SUBSCRIBE", uri, uri, [*headers, f"Expires: {expires}"], call_id=call_id)
            if answer is None or answer.status not in (200, 202):
                self.counts.add(f"SUBSCRIBE {answer.status if answer else 'timeout'}")
                self.notify_contact.pop(call_id, None)
                await self.pause(random.uniform(5, 10))
                continue
            self.counts.add("SUBSCRIBE new")
            contact = re.search(r"<([^>]+)>", answer.h("contact"))
            dialog = (call_id, from_tag, answer.to_tag(), contact.group(1) if contact else uri)
            try:
                await self._refresh_and_end(phone, uri, headers, dialog, expires, index)
            finally:
                self.notify_contact.pop(call_id, None)

    async def _refresh_and_end(self, phone: Phone, uri: str, headers: list[str], dialog: tuple[str, str, str, str],
                               expires: int, index: int) -> None:
        for _ in range(random.randint(0, 2)):
            if await self.pause(expires * random.uniform(0.5, 0.7)):
                break
            answer = await self.in_dialog(phone, "SUBSCRIBE", uri, dialog, [*headers, f"Expires: {expires}"])
            if answer is None or answer.status not in (200, 202):
                self.counts.add(f"SUBSCRIBE refresh {answer.status if answer else 'timeout'}")
                return  # ended by the notifier (481) or unreachable: subscribe anew
            self.counts.add("SUBSCRIBE refreshed")
        stopping = self.stop.is_set()
        if (index % 2 == 0) if stopping else random.random() < 0.5:
            answer = await self.in_dialog(phone, "SUBSCRIBE", uri, dialog, [*headers, "Expires: 0"])
            ok = answer is not None and answer.status in (200, 202)
            self.counts.add("SUBSCRIBE removed" if ok else f"unSUBSCRIBE {answer.status if answer else 'timeout'}")
            if not stopping:
                await self.pause(random.uniform(2, 10))
        else:
            self.counts.add("SUBSCRIBE left to expire")
            if not stopping:
                await self.pause(expires + random.uniform(5, 15))

    async def in_dialog(self, phone: Phone, method: str, to: str, dialog: tuple[str, str, str, str],
                        extra: list[str]) -> Msg | None:
        """An in-dialog request with digest (a refresh is challenged like the SUBSCRIBE that
        made the dialog), to the notifier's latest Contact, through the phone's proxy."""
        call_id, from_tag, to_tag, contact = dialog
        target = self.notify_contact.get(call_id) or contact
        answer: Msg | None = None
        for _ in range(3):
            header = phone.auth_headers.get(method, "Authorization")
            auth = [phone._auth_line(method, target, header)] if phone.challenge else []
            cseq = next(phone.cseq)
            data = phone.build(method, target, call_id, cseq, from_tag, to, to_tag, extra=extra + auth)
            answer = await phone.transaction(method, target, call_id, cseq, data)
            if answer is None or answer.status not in (401, 407):
                return answer
            name = "www-authenticate" if answer.status == 401 else "proxy-authenticate"
            values = answer.all(name)
            if not values:
                return answer
            phone.challenge, phone.nc = challenge_params(values[0]), 0
        return answer


# --- the store, processes and memory ---------------------------------------------------------------


def store_snapshot(endpoint: tuple[str, int] = ETCD) -> Snapshot:
    """Every key under /blf/ with its lease, and every lease with its TTLs and keys.

    Read directly from etcd here (not through EtcdStore, which has no lease listing):
    the one place the soak reads etcd's keys and leases. A key read with a lease that
    expired before the leases were listed is read again."""
    import etcd3  # type: ignore[import-untyped]
    from etcd3.etcdrpc import rpc_pb2  # type: ignore[import-untyped]

    client = etcd3.client(host=endpoint[0], port=endpoint[1], timeout=5)
    try:
        listed = client.leasestub.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), 5)
        leases = {}
        for lease in listed.leases:
            found = _lease(client, int(lease.ID))
            if found is not None:
                leases[int(lease.ID)] = found
        stored: dict[str, StoredKey] = {}
        for kv in client.get_prefix_response(keys.ROOT).kvs:
            stored[kv.key.decode()] = StoredKey(kv.value, int(kv.lease))
        for key, entry in list(stored.items()):
            if entry.lease and entry.lease not in leases:
                found = _lease(client, entry.lease)
                if found is not None:
                    leases[entry.lease] = found
                    continue
                again = client.get_response(key).kvs
                if again:
                    stored[key] = StoredKey(again[0].value, int(again[0].lease))
                else:
                    del stored[key]
        return Snapshot(stored, leases)
    finally:
        client.close()


def _lease(client: Any, lease_id: int) -> StoredLease | None:
    info = client.get_lease_info(lease_id)
    if int(info.TTL) < 0:
        return None  # etcd holds no such lease (-1): it expired meanwhile
    # TTL 0 is a lease in its last second (etcd rounds the time left down), still alive.
    return StoredLease(int(info.grantedTTL), int(info.TTL), tuple(key.decode() for key in info.keys))


def store_health() -> dict[str, Any]:
    """The store's figures: `blfctl store health --json` (statestore.cli_store.store_health),
    called in this process rather than as a command every 10 s."""
    from statestore.cli_store import store_health as health
    from statestore.etcd_store import EtcdStore

    store = EtcdStore(f"{ETCD[0]}:{ETCD[1]}", timeout=5.0)
    try:
        return health(store).to_dict()
    finally:
        store.close()


def memcached_stats(address: tuple[str, int] = MEMCACHED) -> dict[str, int]:
    with socket.create_connection(address, timeout=3) as connection:
        connection.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
    stats = dict(re.findall(r"STAT (\w+) (\d+)\r", data.decode()))
    return {name: int(stats[name]) for name in ("curr_items", "bytes", "limit_maxbytes", "pid") if name in stats}


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private pages) of a process, kB, from smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    field_of = dict(re.findall(r"^(\w+):\s+(\d+) kB", text, re.M))
    return {
        "rss_kb": int(field_of.get("Rss", 0)), "pss_kb": int(field_of.get("Pss", 0)),
        "uss_kb": int(field_of.get("Private_Clean", 0)) + int(field_of.get("Private_Dirty", 0)),
    }


def kamcmd(socket_path: Path, command: str) -> list[dict[str, str]]:
    """The records of a kamcmd answer ({ name: value ... } blocks)."""
    import subprocess

    try:
        text = subprocess.run(["kamcmd", "-s", f"unix:{socket_path}", command], capture_output=True, text=True,
                              timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [dict(re.findall(r"^\s*(\w+): (.*)$", block, re.M)) for block in text.split("}") if ":" in block]


def kamailio_sample(var: Path, name: str, leader: int) -> dict[str, Any]:
    ctl = var / name / "run" / "kamailio_ctl"
    roles = describe({name: ctl})
    pkg = {int(entry["pid"]): entry for entry in kamcmd(ctl, "pkg.stats") if entry.get("pid", "").isdigit()}
    shm = kamcmd(ctl, "core.shmmem")
    processes: dict[str, dict[str, int]] = {}
    for pid in sorted(group_processes([leader])):
        role = roles.get(pid, f"{name}: pid {pid}").split(": ", 1)[1]
        while role in processes:  # two processes of one description
            role += "+"
        entry = {"pid": pid, **memory_kb(pid)}
        if pid in pkg:
            entry["pkg_real_used"] = int(pkg[pid].get("real_used", 0))
            entry["pkg_total"] = int(pkg[pid].get("total_size", 0))
        processes[role] = entry
    return {"shm": {k: int(v) for k, v in (shm[0] if shm else {}).items() if v.isdigit()}, "processes": processes}


class Sampler:
    """Samples every SAMPLE_SECONDS in a thread of its own, until stopped."""

    def __init__(self, lab: Ours, started: float) -> None:
        self.lab = lab
        self.started = started
        self.samples: list[dict[str, Any]] = []
        self.phase = "load"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as exc:  # noqa: BLE001 - a missed sample is noted, the soak goes on
                log(f"sample failed: {type(exc).__name__}: {exc}")
            next_at += SAMPLE_SECONDS
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def sample(self) -> dict[str, Any]:
        at = time.monotonic()
        state = json.loads((self.lab.var / "lab.json").read_text())
        snapshot = store_snapshot()
        now = time.time()
        orphans = find_orphans(snapshot, now)
        sample: dict[str, Any] = {
            "t": round(at - self.started, 1), "phase": self.phase, "store": store_health(),
            "orphans": len(orphans), "orphan_examples": [f"{o.what}: {o.reason}" for o in orphans[:5]],
            "etcd": memory_kb(int(state["etcd"]["pid"])),
            "memcached": {**memory_kb(int(state["memcached"]["pid"])), **memcached_stats()},
            "kamailio": {name: kamailio_sample(self.lab.var, name, int(entry["pid"]))
                         for name, entry in sorted(state["instances"].items())},
        }
        sample["sample_seconds"] = round(time.monotonic() - at, 2)
        return sample


# --- verdict -----------------------------------------------------------------------------------


def slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope (value per second) of (t, value) points, and its standard error."""
    n = len(points)
    if n < 3:
        return 0.0, 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread:
        return 0.0, 0.0
    fitted = sum((t - mean_t) * (v - mean_v) for t, v in points) / spread
    residuals = sum((v - mean_v - fitted * (t - mean_t)) ** 2 for t, v in points)
    return fitted, (residuals / (n - 2) / spread) ** 0.5


Series = tuple[list[tuple[float, float]], float]  # (t, value) points and the figure's limit


def figures(samples: list[dict[str, Any]], memory_share_kb: float) -> dict[str, Series]:
    """Every figure with a verdict: name -> ((t, value) points, its limit in the same unit)."""
    out: dict[str, Series] = {}

    def add(name: str, t: float, value: float | None, limit: float) -> None:
        if value is None:
            return
        points, _ = out.setdefault(name, ([], limit))
        points.append((t, float(value)))
        out[name] = (points, limit)

    for sample in samples:
        t, store = sample["t"], sample["store"]
        quota = store.get("quota") or 2 * 1024**3
        add("etcd db_size (bytes)", t, store["db_size"], quota)
        add("etcd keys", t, store["keys"], quota / BYTES_PER_KEY)
        add("etcd leases", t, store["leases"], quota / BYTES_PER_KEY)
        # etcd and memcached share no memory with anyone: RSS (their USS moves as the kernel
        # counts etcd's mapped database file private or shared).
        add("etcd RSS (kB)", t, sample["etcd"].get("rss_kb"), memory_share_kb)
        cache = sample["memcached"]
        add("memcached bytes", t, cache.get("bytes"), cache.get("limit_maxbytes", 64 * 1024**2))
        if cache.get("curr_items"):
            per_item = max(1.0, cache.get("bytes", 0) / cache["curr_items"])
            add("memcached curr_items", t, cache["curr_items"], cache.get("limit_maxbytes", 64 * 1024**2) / per_item)
        add("memcached RSS (kB)", t, cache.get("rss_kb"), memory_share_kb)
        for name, instance in sample["kamailio"].items():
            shm = instance["shm"]
            if shm:
                add(f"{name} shm real_used (bytes)", t, shm.get("real_used"), shm.get("total", 0))
            for role, proc in instance["processes"].items():
                add(f"{name} {role}: USS (kB)", t, proc.get("uss_kb"), memory_share_kb)
                if "pkg_real_used" in proc:
                    add(f"{name} {role}: pkg real_used (bytes)", t, proc["pkg_real_used"], proc["pkg_total"])
    return out


def verdict(samples: list[dict[str, Any]], fit_from: float, fit_to: float, memory_share_kb: float
            ) -> dict[str, Any]:
    """Per figure: slope over [fit_from, fit_to] and days until its limit at that slope. It
    keeps growing when that is fewer than HORIZON_DAYS and the slope is a trend, not noise:
    more than SIGNIFICANT standard errors above zero (a level that wobbles with the live
    calls, as shared memory does with transactions, fits slopes of either sign)."""
    result: dict[str, Any] = {}
    for name, (points, limit) in figures(samples, memory_share_kb).items():
        window = [(t, v) for t, v in points if fit_from <= t <= fit_to]
        if len(window) < 3:
            continue
        per_second, error = slope(window)
        last = window[-1][1]
        headroom = max(0.0, limit - last)
        days = headroom / (per_second * 86400) if per_second > 0 else None
        trend = per_second > SIGNIFICANT * error
        result[name] = {
            "slope_per_hour": round(per_second * 3600, 3), "slope_error_per_hour": round(error * 3600, 3),
            "first": window[0][1], "last": last, "limit": limit,
            "days_to_limit": round(days, 1) if days is not None else None, "trend": trend,
            "fails": trend and days is not None and days < HORIZON_DAYS, "samples": len(window),
        }
    return result


# --- plot ------------------------------------------------------------------------------------------


def plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = report["samples"]
    if not samples:
        return False
    t = [s["t"] / 60 for s in samples]
    panels: list[tuple[str, dict[str, list[float | None]]]] = [
        ("etcd database (MB)", {"size": [s["store"]["db_size"] / 1e6 for s in samples],
                                "in use": [(s["store"]["db_size_in_use"] or 0) / 1e6 for s in samples]}),
        ("etcd revision", {"revision": [s["store"]["revision"] for s in samples]}),
        ("keys and leases", {"keys": [s["store"]["keys"] for s in samples],
                             "leases": [s["store"]["leases"] for s in samples],
                             **{kind: [s["store"]["keys_by_kind"].get(kind, 0) for s in samples]
                                for kind in ("legs", "regs", "subs")}}),
        ("orphans (consistency check)", {"orphans": [s["orphans"] for s in samples]}),
        ("Kamailio shm real_used (MB)", {name: [(s["kamailio"].get(name, {}).get("shm", {}).get("real_used") or 0)
                                                / 1e6 for s in samples] for name in ("ks1", "ks2")}),
        ("Kamailio pkg real_used, sum per instance (MB)", {
            name: [sum(p.get("pkg_real_used", 0) for p in s["kamailio"].get(name, {}).get("processes", {}).values())
                   / 1e6 for s in samples] for name in ("ks1", "ks2")}),
        ("Kamailio PSS / USS, sum per instance (MB)", {
            f"{name} {kind}": [sum(p.get(f"{kind}_kb", 0) for p in s["kamailio"].get(name, {}).get("processes", {})
                                   .values()) / 1024 for s in samples] for name in ("ks1", "ks2") for kind in ("pss",
                                                                                                            "uss")}),
        ("etcd and memcached RSS (MB)", {"etcd": [s["etcd"].get("rss_kb", 0) / 1024 for s in samples],
                                         "memcached": [s["memcached"].get("rss_kb", 0) / 1024 for s in samples]}),
        ("memcached curr_items", {"items": [s["memcached"].get("curr_items", 0) for s in samples]}),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), sharex=True)
    for axis, (title, series) in zip(axes, panels, strict=True):
        for label, values in series.items():
            axis.plot(t, values, label=label, linewidth=1)
        axis.set_title(title, fontsize=10)
        axis.axvspan(report["fit_from_s"] / 60, report["fit_to_s"] / 60, color="grey", alpha=0.1)
        if report.get("restart_at_s") is not None:
            axis.axvline(report["restart_at_s"] / 60, color="red", linestyle=":", linewidth=1)
        axis.axvline(report["load_s"] / 60, color="black", linestyle=":", linewidth=1)
        if len(series) > 1:
            axis.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("minutes (red: ks2 restart, black: load stops, grey: slope window)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True


# --- the run -------------------------------------------------------------------------------------


class SoakLab(Ours):
    """The bench's lab with the lab's own shared memory (256 MB, not the bench's 1024)."""

    def __init__(self, var: Path, sub_min_expires: int) -> None:
        super().__init__(var)
        self.env.pop("BLF_SHM_MB", None)
        self.env["BLF_SUB_MIN_EXPIRES"] = str(sub_min_expires)


def users() -> tuple[list[str], list[str], list[str]]:
    return ([f"p{i:03d}" for i in range(CALLEES)], [f"w{i:03d}" for i in range(WATCHERS)],
            [f"c{i:03d}" for i in range(CALLERS)])


async def drive(lab: SoakLab, args: argparse.Namespace, report: dict[str, Any], sampler: Sampler) -> None:
    stop = asyncio.Event()
    client = SoakClient(stop)
    callees, watchers, callers = users()
    expires_range = (args.sub_expires_min, args.sub_expires_max)
    try:
        callee_phones = [await client.soak_phone(user, KS2) for user in callees]
        for phone in callee_phones:
            phone.on_request = client.callee_request
        caller_phones = [await client.soak_phone(user, KS1) for user in callers]
        for phone in caller_phones:
            phone.on_request = lambda p, m: p.send(p.response(m, 200, "OK"), m.source)
        loops = [asyncio.create_task(client.keep_registered(p, i)) for i, p in enumerate(callee_phones)]
        for index, user in enumerate(watchers):
            phone = await client.soak_phone(user, KS1 if index % 2 == 0 else KS2)
            phone.on_request = client.watcher_handler()
            for k in range(PRESENTITIES_PER_WATCHER):
                presentity = callees[(index * PRESENTITIES_PER_WATCHER + k) % CALLEES]
                loops.append(asyncio.create_task(client.keep_subscribed(phone, presentity, expires_range, k)))
        await asyncio.sleep(3.0)  # the first registrations
        calls = await place_calls(client, caller_phones, callees, lab, args, report)
        log(f"load stops; {len(calls)} calls in flight finish, registrations and subscriptions end")
        report["load_s"] = round(time.monotonic() - report["_started"], 1)
        stop.set()
        sampler.phase = "drain"
        await asyncio.gather(*calls, *loops)
        report["counts"] = dict(sorted(client.counts.values.items()))
        report["client_errors"] = client.stats.errors
        log(f"counts: {report['counts']}")
    finally:
        client.close()


async def place_calls(client: SoakClient, callers: list[SoakPhone], callees: list[str], lab: SoakLab,
                      args: argparse.Namespace, report: dict[str, Any]) -> set[asyncio.Task[None]]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    duration = args.minutes * 60
    in_flight: set[asyncio.Task[None]] = set()
    if args.restart_at > 0:
        restarting = loop.create_task(restart_ks2(lab, duration * args.restart_at, report))
        in_flight.add(restarting)
        restarting.add_done_callback(in_flight.discard)
    number = 0
    next_log = start + 60
    while True:
        at = start + number / args.rate
        if at - start >= duration:
            break
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        fate = random.choices(("ans", "busy", "cancel"), (0.7, 0.15, 0.15))[0]
        task = loop.create_task(client.place_call(callers[number % len(callers)], random.choice(callees), fate,
                                                  random.uniform(2.0, 8.0)))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        number += 1
        if loop.time() >= next_log:
            next_log += 60
            log(f"{(loop.time() - start) / 60:.0f} min: {number} calls; {dict(sorted(client.counts.values.items()))}")
    report["calls_placed"] = number
    return set(in_flight)


async def restart_ks2(lab: SoakLab, after: float, report: dict[str, Any]) -> None:
    """While the calls go on: SIGKILL ks2's process group, then start it (bench.run.Ours.restart)."""
    await asyncio.sleep(after)
    report["restart_at_s"] = round(time.monotonic() - report["_started"], 1)
    log("restarting ks2 (SIGKILL, start)")
    report["restart_seconds"] = round(await asyncio.to_thread(lab.restart, "ks2"), 2)
    log(f"ks2 back in {report['restart_seconds']} s")


def wait_for_leftovers(lab: SoakLab, timeout: float) -> tuple[list[str], float]:
    """Poll the store until only provisioning and the instances remain; what remains then."""
    started = time.monotonic()
    remaining: list[str] = []
    while True:
        snapshot = store_snapshot()
        found = find_leftovers(snapshot, {"ks1", "ks2"}) + find_orphans(snapshot, time.time())
        remaining = sorted({f"{o.what}: {o.reason}" for o in found})
        if not remaining or time.monotonic() - started > timeout:
            return remaining, time.monotonic() - started
        time.sleep(2.0)


def memory_share_kb(processes: int) -> float:
    """A fair share of the machine's memory per monitored process (MemTotal / processes)."""
    match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return int(match.group(1)) / max(1, processes) if match else 1024.0 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of load (default 30)")
    parser.add_argument("--rate", type=float, default=5.0, help="calls per second (default 5)")
    parser.add_argument("--sub-expires-min", type=int, default=60)
    parser.add_argument("--sub-expires-max", type=int, default=120)
    parser.add_argument("--restart-at", type=float, default=0.2, help="fraction of the load; 0: no restart")
    parser.add_argument("--quick", action="store_true",
                        help="the 2-minute version of `make test`: 1.5 min of load, Expires 20-40 s")
    parser.add_argument("--var", default=None, help="runtime files (default var/soak-PID)")
    parser.add_argument("--out", default=None, help="JSON result path (default bench/results/soak-<stamp>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.sub_expires_min, args.sub_expires_max = 1.5, 20, 40
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    var = Path(args.var or ROOT / "var" / f"soak-{os.getpid()}")
    var.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / f"soak-{stamp}.json"
    lab = SoakLab(var, min(60, args.sub_expires_min))
    report: dict[str, Any] = {
        "started": stamp, "machine": machine(), "netns": os.path.basename(os.readlink("/proc/self/ns/net")),
        "minutes": args.minutes, "rate": args.rate, "sub_expires": [args.sub_expires_min, args.sub_expires_max],
        "reg_expires": REG_EXPIRES, "accounts": {"callees": CALLEES, "watchers": WATCHERS, "callers": CALLERS},
        "horizon_days": HORIZON_DAYS, "sample_seconds": SAMPLE_SECONDS, "restart_at_s": None,
    }
    sampler: Sampler | None = None
    try:
        log(f"lab up under {var}")
        callees, watchers, callers = users()
        lab.start(callees + watchers + callers)
        report["_started"] = time.monotonic()
        sampler = Sampler(lab, report["_started"])
        sampler.start()
        asyncio.run(drive(lab, args, report, sampler))
        # Registrations lapse after Expires + the lease's grace, subscriptions when the
        # notifier ends them: wait for the longest, and a margin.
        drain_budget = max(REG_EXPIRES + 2, args.sub_expires_max) + 30
        log(f"waiting up to {drain_budget} s for the store to hold only provisioning and instances")
        leftovers, waited = wait_for_leftovers(lab, drain_budget)
        report["drain_s"] = round(waited, 1)
        report["leftovers"] = leftovers
        time.sleep(SAMPLE_SECONDS)  # one more sample of the quiet store
    finally:
        if sampler is not None:
            sampler.stop()
            report["samples"] = sampler.samples
        lab.stop()
        if not args.var:
            shutil.rmtree(var, ignore_errors=True)
    return finish(report, args, out)


def finish(report: dict[str, Any], args: argparse.Namespace, out: Path) -> int:
    started = report.pop("_started", None)
    del started
    samples = report.get("samples", [])
    load_s = report.get("load_s", 0.0)
    restart = report.get("restart_at_s")
    settle = min(RESTART_SETTLE_S, (load_s - restart) / 2) if restart is not None else 0.0
    fit_from = max(load_s / 2, (restart or 0.0) + settle)
    report.update(fit_from_s=round(fit_from, 1), fit_to_s=load_s)
    processes = len(samples[-1]["kamailio"].get("ks1", {}).get("processes", {})) * 2 + 2 if samples else 40
    report["memory_share_kb"] = round(memory_share_kb(processes))
    report["figures"] = verdict(samples, fit_from, load_s, report["memory_share_kb"])
    growing = sorted(name for name, figure in report["figures"].items() if figure["fails"])
    report["verdict"] = {
        "growing": growing, "orphans": len(report.get("leftovers", [])),
        "orphans_seen_during_load": max((s["orphans"] for s in samples if s["phase"] == "load"), default=0),
        "slopes_computed": len(report["figures"]),
        # --quick fits a window of under a minute: its slopes are computed and shown, not judged.
        "growth_judged": not args.quick,
        "passed": (args.quick or not growing) and not report.get("leftovers") and "load_s" in report,
    }
    png = out.with_suffix(".png")
    report["plot"] = png.name if plot(report, png) else None
    out.write_text(json.dumps(report, separators=(",", ":")))  # one line: about 40 kB per minute of load
    for name, figure in sorted(report["figures"].items()):
        if figure["fails"] or not args.quick and name.startswith(("etcd", "memcached")):
            log(f"{'GROWING ' if figure['fails'] else ''}{name}: {figure['slope_per_hour']}/h "
                f"(+-{figure['slope_error_per_hour']}), "
                f"{figure['first']} -> {figure['last']}, limit {figure['limit']:.0f}, "
                f"days to limit {figure['days_to_limit']}")
    for leftover in report.get("leftovers", [])[:20]:
        log(f"ORPHAN {leftover}")
    log(f"verdict: {json.dumps(report['verdict'])}")
    log(f"results: {out}")
    return 0 if report["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
