"""Directory lookups, measured side by side (issue 7 §5): etcd direct, memcached cache-aside,
and the in-process copy (`blf_dir` htable) the SIP workers read.

Runs where it is started; put it in a network namespace of its own (`bench/in_netns.sh`, or
`ip netns exec NS`) with its own BLF_VAR: it starts a lab (etcd 2379, memcached 11211, ks1/ks2
on 5071/5072) and stops it at the end.

    python -m bench.directory [--accounts 10000] [--aliases 2] [--reps 3] [--samples 2000]
                              [--rate 200] [--live-seconds 20] [--sim-seconds 3600] [--no-kamailio]

1. Provisions N accounts with A aliases each in one domain (`blfctl account import`, timed).
2. Per repetition, interleaved sample by sample so that the machine's noise falls on every
   candidate alike, on keys drawn uniformly:
   - etcd direct: a get of an account (decoded as the SIP path does) and of an alias;
   - memcached: a get that hits (same bytes, decoded), and the miss path (get that misses, etcd
     get, set noreply);
   - a Python dict filled from an etcd snapshot (what an in-process copy costs at best from
     Python; the real copy is Kamailio's shared-memory htable, measured by the SIP workers).
3. Hit rate of memcached cache-aside with TTL 1 s (1 s consistency without invalidation) and
   300 s, for the lookup mix below, live against memcached and etcd for --live-seconds at
   --rate requests/s, and simulated on the same mix for --sim-seconds (steady state).
   Mix: each request does 3 lookups: the caller's account (Zipf s=1 over the accounts, as
   a few busy phones and many quiet ones), an alias of the callee (its account drawn from the
   same Zipf independently, one of its aliases uniformly) and the callee's domain rules.
4. With Kamailio (unless --no-kamailio): shared memory (`core.shmmem`) of each instance before
   and after the import (what the copy costs for N accounts), the copy's load time at an
   instance restart (from its log, when it says so), and the `blf directory: stats` lines the
   SIP workers log every BLF_DIRECTORY_STATS_SECONDS (set to 5 here) under a SIP load of
   REGISTERs and SUBSCRIBE fetches to aliases.

Results: bench/results/directory-<UTC stamp>.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOMAIN = "dir.example"
ZIPF_S = 1.0
STATS_SECONDS = 5
STATS_LINE = re.compile(
    r"blf directory: stats lookups=(\d+) shm=(\d+) store=(\d+) shm_p50_us=([\d.]+) shm_p99_us=([\d.]+)"
    r" store_p50_us=([\d.]+) store_p99_us=([\d.]+)"
)

LOADED = re.compile(r"blf directory: copy loaded at revision \d+, (\d+) keys in ([\d.]+)s")


def user_of(index: int) -> str:
    return f"u{index:05d}"


def aliases_of(index: int, count: int) -> list[str]:
    forms = [f"{100000 + index}", f"+1555{index:07d}", f"desk-{index:05d}"]
    return [forms[i % len(forms)] + ("" if i < len(forms) else f"-{i}") for i in range(count)]


def password(index: int) -> str:
    return f"pw-{index:05d}"


def nagle(client: Any, samples: int) -> dict[str, float]:
    """A get right after a noreply set on a client without TCP_NODELAY (as statestore/cache.py
    makes it): the get's bytes wait in the kernel until the set is ACKed."""
    timings: list[int] = []
    for sample in range(samples):
        client.set(f"dirbench:nagle:{sample}", b"x", expire=60, noreply=True)
        t0 = time.perf_counter_ns()
        client.get(f"dirbench:nagle:{sample}")
        timings.append(time.perf_counter_ns() - t0)
    client.close()
    return summary_us(timings)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def summary_us(samples_ns: list[int]) -> dict[str, float]:
    values = [v / 1000 for v in samples_ns]
    return {"n": len(values), "p50_us": round(percentile(values, 50), 1), "p99_us": round(percentile(values, 99), 1),
            "mean_us": round(statistics.fmean(values), 1) if values else float("nan")}


# --- provisioning ---------------------------------------------------------------------------


def provision(var: Path, accounts: int, aliases: int, etcd: str) -> dict[str, Any]:
    source = var / "directory-import.csv"
    with open(source, "w", encoding="utf-8") as out:
        for index in range(accounts):
            out.write(f"{user_of(index)}@{DOMAIN},{password(index)},{';'.join(aliases_of(index, aliases))}\n")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "statestore.cli", "--etcd", etcd, "account", "import", str(source)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"import failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    return {"accounts": accounts, "aliases_per_account": aliases, "import_seconds": round(seconds, 2),
            "blfctl_says": done.stdout.strip()}


# --- latency ----------------------------------------------------------------------------------


def measure_latency(store: Any, cache: Any, accounts: int, aliases: int, samples: int, rng: random.Random,
                    rep: int) -> dict[str, Any]:
    from statestore import codec, keys
    from statestore.domain.model import Account

    etcd = store.client
    # The in-process copy as Python sees it at best: a dict from one paged snapshot.
    started = time.perf_counter()
    _revision, items = store.snapshot([keys.ACCOUNTS, keys.ALIASES, keys.DOMAINS])
    copy = {kv.key[len(keys.ROOT):]: kv.value for kv in items}
    snapshot_seconds = time.perf_counter() - started
    # memcached holds the same bytes as etcd for the hit path.
    for index in range(accounts):
        aor = f"{user_of(index)}@{DOMAIN}"
        cache.set(f"dirbench:{aor}", copy[f"accounts/{aor}"], expire=3600, noreply=True)
    cache.get("dirbench:sync")  # every noreply set before it is done

    timings: dict[str, list[int]] = {name: [] for name in (
        "etcd_account", "etcd_alias", "memcached_hit", "memcached_miss_path", "python_dict")}
    clock = time.perf_counter_ns
    for sample in range(samples):
        index = rng.randrange(accounts)
        aor = f"{user_of(index)}@{DOMAIN}"
        alias = rng.choice(aliases_of(index, aliases)) if aliases else user_of(index)
        order = list(timings)
        rng.shuffle(order)
        for name in order:
            if name == "etcd_account":
                t0 = clock()
                value, _ = etcd.get(keys.account(aor))
                Account.from_dict(codec.decode(value))
            elif name == "etcd_alias":
                t0 = clock()
                value, _ = etcd.get(keys.alias(DOMAIN, alias))
                bytes(value).decode()
            elif name == "memcached_hit":
                t0 = clock()
                value = cache.get(f"dirbench:{aor}")
                Account.from_dict(codec.decode(value))
            elif name == "memcached_miss_path":
                key = f"dirbench:miss:{rep}:{sample}"
                t0 = clock()
                value = cache.get(key)
                if value is None:
                    value, _ = etcd.get(keys.account(aor))
                    cache.set(key, value, expire=60, noreply=True)
                Account.from_dict(codec.decode(value))
            else:
                t0 = clock()
                Account.from_dict(codec.decode(copy[f"accounts/{aor}"]))
            timings[name].append(clock() - t0)
    result = {name: summary_us(values) for name, values in timings.items()}
    result["snapshot"] = {"keys": len(copy), "seconds": round(snapshot_seconds, 3)}
    return result


# --- hit rate ---------------------------------------------------------------------------------


class Zipf:
    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        weights = [1 / (rank ** s) for rank in range(1, n + 1)]
        total = sum(weights)
        self.cumulative: list[float] = []
        running = 0.0
        for weight in weights:
            running += weight / total
            self.cumulative.append(running)
        self.permutation = list(range(n))
        rng.shuffle(self.permutation)  # rank -> account: the busy ones are anywhere in the list
        self.rng = rng

    def draw(self) -> int:
        rank = bisect.bisect_left(self.cumulative, self.rng.random())
        return self.permutation[min(rank, len(self.permutation) - 1)]


def request_keys(zipf: Zipf, aliases: int, rng: random.Random) -> list[str]:
    caller, callee = zipf.draw(), zipf.draw()
    alias = rng.choice(aliases_of(callee, aliases)) if aliases else user_of(callee)
    return [f"accounts/{user_of(caller)}@{DOMAIN}", f"aliases/{DOMAIN}/{alias}", f"domains/{DOMAIN}"]


def simulate_hit_rate(ttl: float, rate: float, seconds: float, accounts: int, aliases: int, seed: int) -> float:
    """Cache-aside with a TTL on a virtual clock: a lookup hits if the key was set less than
    `ttl` ago; a miss sets it. Requests evenly spaced at `rate`/s."""
    rng = random.Random(seed)
    zipf = Zipf(accounts, ZIPF_S, rng)
    expires: dict[str, float] = {}
    hits = lookups = 0
    for step in range(int(rate * seconds)):
        now = step / rate
        for key in request_keys(zipf, aliases, rng):
            lookups += 1
            if expires.get(key, -1.0) > now:
                hits += 1
            else:
                expires[key] = now + ttl
    return hits / lookups if lookups else float("nan")


def live_hit_rate(store: Any, cache: Any, ttl: int, rate: float, seconds: float, accounts: int, aliases: int,
                  seed: int) -> dict[str, Any]:
    """Cache-aside against the real memcached and etcd, paced at `rate` requests/s."""
    rng = random.Random(seed)
    zipf = Zipf(accounts, ZIPF_S, rng)
    etcd = store.client
    prefix = f"dirlive:{ttl}:{seed}:"
    hits = lookups = 0
    latencies: list[int] = []
    start = time.monotonic()
    step = 0
    while time.monotonic() - start < seconds:
        due = start + step / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        step += 1
        for key in request_keys(zipf, aliases, rng):
            t0 = time.perf_counter_ns()
            value = cache.get(prefix + key)
            if value is None:
                value, _ = etcd.get("/blf/" + key)
                cache.set(prefix + key, value or b"", expire=ttl, noreply=True)
            else:
                hits += 1
            latencies.append(time.perf_counter_ns() - t0)
            lookups += 1
    elapsed = time.monotonic() - start
    return {"ttl_s": ttl, "requests": step, "lookups": lookups, "achieved_rate": round(step / elapsed, 1),
            "hit_rate": round(hits / lookups, 4) if lookups else None, "latency": summary_us(latencies)}


# --- Kamailio -----------------------------------------------------------------------------------


def shmmem(var: Path, name: str) -> dict[str, int]:
    done = subprocess.run(["kamcmd", "-s", f"unix:{var / name / 'run' / 'kamailio_ctl'}", "core.shmmem"],
                          capture_output=True, text=True, timeout=10, check=False)
    return {field: int(value) for field, value in re.findall(r"(\w+):\s+(\d+)", done.stdout)}


def htable_stats(var: Path, name: str) -> str:
    done = subprocess.run(["kamcmd", "-s", f"unix:{var / name / 'run' / 'kamailio_ctl'}", "htable.stats"],
                          capture_output=True, text=True, timeout=10, check=False)
    return (done.stdout + done.stderr).strip()


def directory_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if "blf directory" in line]


def sip_load(accounts: int, aliases: int, phones: int, rng: random.Random) -> dict[str, Any]:
    """REGISTER then a SUBSCRIBE fetch (Expires: 0) to an alias of another account, per phone,
    alternately through ks1 and ks2: each request reads accounts, aliases and domain rules."""
    from tests.sipua import UserAgent

    instances = [("127.0.0.1", 5071), ("127.0.0.1", 5072)]
    answers: dict[str, int] = {}
    started = time.monotonic()
    for number in range(phones):
        index = rng.randrange(accounts)
        ua = UserAgent(user_of(index), DOMAIN, password(index), instances[number % 2])
        try:
            for method, response in (
                ("REGISTER", lambda ua=ua: ua.register(60)),
                ("SUBSCRIBE", lambda ua=ua: ua.request(
                    "SUBSCRIBE", f"sip:{rng.choice(aliases_of(rng.randrange(accounts), aliases))}@{DOMAIN}",
                    {"Event": "dialog", "Expires": "0"}, timeout=3.0)),
            ):
                try:
                    status = response().status
                except TimeoutError:
                    status = 0
                answers[f"{method} {status}"] = answers.get(f"{method} {status}", 0) + 1
        finally:
            ua.close()
    return {"phones": phones, "answers": answers, "seconds": round(time.monotonic() - started, 2)}


def parse_stats(text: str) -> dict[str, Any]:
    lines = [tuple(float(v) for v in match.groups()) for match in STATS_LINE.finditer(text)]
    if not lines:
        return {"lines": 0}
    shm_p50 = [line[3] for line in lines if line[1] > 0]
    shm_p99 = [line[4] for line in lines if line[1] > 0]
    store_p50 = [line[5] for line in lines if line[2] > 0]
    store_p99 = [line[6] for line in lines if line[2] > 0]
    return {
        "lines": len(lines), "lookups": int(sum(line[0] for line in lines)),
        "shm": int(sum(line[1] for line in lines)), "store": int(sum(line[2] for line in lines)),
        "shm_p50_us_median_of_workers": statistics.median(shm_p50) if shm_p50 else None,
        "shm_p99_us_median_of_workers": statistics.median(shm_p99) if shm_p99 else None,
        "shm_p99_us_max_of_workers": max(shm_p99) if shm_p99 else None,
        "store_p50_us_median_of_workers": statistics.median(store_p50) if store_p50 else None,
        "store_p99_us_max_of_workers": max(store_p99) if store_p99 else None,
    }


def log_size(var: Path, name: str) -> int:
    path = var / name / "kamailio.log"
    return path.stat().st_size if path.exists() else 0


def log_since(var: Path, name: str, size: int) -> str:
    with open(var / name / "kamailio.log", "rb") as log:
        log.seek(size)
        return log.read().decode(errors="replace")


# --- report ---------------------------------------------------------------------------------------


def median_of(reps: list[dict[str, Any]], name: str, field: str) -> float:
    return statistics.median(rep[name][field] for rep in reps)


def markdown(results: dict[str, Any]) -> str:
    reps = results["latency"]
    base = median_of(reps, "etcd_account", "p50_us")
    rows = ["| lookup | p50 µs (median of reps) | p99 µs (median of reps) | p50 vs etcd account get |",
            "|---|---|---|---|"]
    labels = {
        "etcd_account": "(a) etcd get, account (+ decode)",
        "etcd_alias": "(a) etcd get, alias",
        "memcached_hit": "(b) memcached get, hit (+ decode)",
        "memcached_miss_path": "(b) miss path: memcached miss + etcd get + set",
        "python_dict": "(c') Python dict from a snapshot (+ decode)",
    }
    for name, label in labels.items():
        p50, p99 = median_of(reps, name, "p50_us"), median_of(reps, name, "p99_us")
        rows.append(f"| {label} | {p50:.1f} | {p99:.1f} | {p50 / base:.2f}x |")
    kam = results.get("kamailio") or {}
    stats = kam.get("stats") or {}
    if stats.get("lines"):
        p50 = stats["shm_p50_us_median_of_workers"] or 0.0
        rows.append(f"| (c) blf_dir htable in Kamailio, sht_get (median of the workers' p50 and p99; max p99) | "
                    f"{p50:.1f} | {stats['shm_p99_us_median_of_workers']:.1f} (max "
                    f"{stats['shm_p99_us_max_of_workers']:.1f}) | {p50 / base:.3f}x |")
    else:
        rows.append("| (c) blf_dir htable in Kamailio | not measured (no stats lines logged) | | |")
    rows += ["", "| cache-aside hit rate | TTL 1 s | TTL 300 s |", "|---|---|---|"]
    live = results["hit_rate"]["live"]
    for label, source in (("live, per rep", live), ("simulated steady state", results["hit_rate"]["simulated"])):
        one = [r["hit_rate"] for r in source if r["ttl_s"] == 1]
        long = [r["hit_rate"] for r in source if r["ttl_s"] == 300]
        rows.append(f"| {label} | {', '.join(f'{v:.3f}' for v in one)} | {', '.join(f'{v:.3f}' for v in long)} |")
    for ttl in (1, 300):
        lat = [r["latency"] for r in live if r["ttl_s"] == ttl]
        if lat:
            rows.append(f"| live cache-aside lookup latency TTL {ttl} s, p50/p99 µs (median of reps) | "
                        f"{statistics.median(x['p50_us'] for x in lat):.1f} / "
                        f"{statistics.median(x['p99_us'] for x in lat):.1f} | |")
    if kam:
        rows += ["", f"Kamailio shared memory used, before/after import: {kam.get('shm_used')}",
                 f"copy load at restart: {kam.get('restart')}"]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=10000)
    parser.add_argument("--aliases", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2000, help="lookups of each kind per repetition")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s of the hit-rate mix (3 lookups each)")
    parser.add_argument("--live-seconds", type=float, default=20.0)
    parser.add_argument("--sim-seconds", type=float, default=3600.0)
    parser.add_argument("--phones", type=int, default=300, help="phones of the SIP load (REGISTER + SUBSCRIBE)")
    parser.add_argument("--no-kamailio", action="store_true", help="etcd and memcached only")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    os.environ.setdefault("BLF_VAR", str(ROOT / "var" / f"dirbench-{os.getpid()}"))
    os.environ["BLF_DIRECTORY_STATS_SECONDS"] = str(STATS_SECONDS)
    from pymemcache.client.base import Client  # type: ignore[import-untyped]

    from statestore.etcd_store import EtcdStore
    from statestore.lab import ETCD_CLIENT, MEMCACHED, Lab, LabError

    lab = Lab()
    var = lab.paths.var
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_at_start": os.getloadavg()},
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True, check=False).stdout.strip(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "mix": {"lookups_per_request": ["caller account (Zipf)", "alias of callee (Zipf account, uniform alias)",
                                        "callee domain rules"], "zipf_s": ZIPF_S},
    }
    kam: dict[str, Any] = {}
    try:
        if args.no_kamailio:
            lab.ensure_store()  # the bench needs the lab's etcd and memcached only
            lab.ensure_memcached()
        else:
            lab.up(instances=2, direct_store=True)  # no store link in the measured path
            time.sleep(2)
            kam["shm_before"] = {name: shmmem(var, name) for name in ("ks1", "ks2")}
        results["provisioning"] = provision(var, args.accounts, args.aliases, ETCD_CLIENT)
        print(f"provisioned: {results['provisioning']}", flush=True)
        if not args.no_kamailio:
            time.sleep(5)  # the watch applies the import to the copy
            kam["shm_after"] = {name: shmmem(var, name) for name in ("ks1", "ks2")}
            kam["shm_used"] = {
                name: {"before": kam["shm_before"][name].get("used"), "after": kam["shm_after"][name].get("used"),
                       "delta_bytes": (kam["shm_after"][name].get("used", 0) - kam["shm_before"][name].get("used", 0))}
                for name in ("ks1", "ks2")
            }
            kam["htable_stats_ks1"] = htable_stats(var, "ks1")
            kam["directory_lines_after_import"] = directory_lines(log_since(var, "ks1", 0))[-5:]

        store = EtcdStore(ETCD_CLIENT, timeout=2.0)
        host, _, port = MEMCACHED.rpartition(":")
        # no_delay: TCP_NODELAY. Without it (pymemcache's default, and statestore/cache.py's), a
        # get right after a noreply set waits ~40 ms for the delayed ACK (Nagle): measured below.
        cache = Client((host, int(port)), connect_timeout=1.0, timeout=1.0, no_delay=True)
        results["nagle"] = nagle(Client((host, int(port)), connect_timeout=1.0, timeout=1.0), 200)
        print(f"get after a noreply set, client without TCP_NODELAY: {results['nagle']}", flush=True)
        rng = random.Random(7)
        results["latency"] = []
        results["hit_rate"] = {"live": [], "simulated": []}
        for rep in range(args.reps):
            latency = measure_latency(store, cache, args.accounts, args.aliases, args.samples, rng, rep)
            results["latency"].append(latency)
            print(f"rep {rep + 1}: " + ", ".join(
                f"{name} {value['p50_us']}/{value['p99_us']}" for name, value in latency.items() if "p50_us" in value),
                flush=True)
            for ttl in (1, 300):
                live = live_hit_rate(store, cache, ttl, args.rate, args.live_seconds, args.accounts, args.aliases,
                                     seed=1000 * rep + ttl)
                results["hit_rate"]["live"].append(live)
                print(f"rep {rep + 1}: live TTL {ttl}: {live}", flush=True)
        for ttl in (1, 300):
            rate = simulate_hit_rate(ttl, args.rate, args.sim_seconds, args.accounts, args.aliases, seed=ttl)
            results["hit_rate"]["simulated"].append({"ttl_s": ttl, "seconds": args.sim_seconds,
                                                     "hit_rate": round(rate, 4)})
        store.close()

        if not args.no_kamailio:
            sizes = {name: log_size(var, name) for name in ("ks1", "ks2")}
            # Workers log their stats at their first lookup STATS_SECONDS after the last line:
            # a second round after a pause makes every worker that served the first one log it.
            kam["sip_load"] = [sip_load(args.accounts, args.aliases, args.phones, random.Random(11))]
            time.sleep(STATS_SECONDS + 1)
            kam["sip_load"].append(sip_load(args.accounts, args.aliases, args.phones, random.Random(12)))
            time.sleep(STATS_SECONDS + 1)
            kam["sip_load"].append(sip_load(args.accounts, args.aliases, max(20, args.phones // 10),
                                            random.Random(13)))
            logged = "".join(log_since(var, name, sizes[name]) for name in ("ks1", "ks2"))
            kam["stats"] = parse_stats(logged)
            kam["directory_lines_sample"] = directory_lines(logged)[:20]
            # The copy's load at start-up: restart ks1 and time it to its first OPTIONS answer.
            size = log_size(var, "ks1")
            lab.kill("ks1")
            started = time.monotonic()
            try:
                lab.start("ks1")
            except LabError as exc:
                kam["restart"] = {"error": str(exc)}
            else:
                ready = time.monotonic() - started
                time.sleep(3)
                lines = directory_lines(log_since(var, "ks1", size))
                loaded = [LOADED.search(line) for line in lines]
                kam["restart"] = {"ks1_answers_sip_after_s": round(ready, 2),
                                  "shm_used_after_restart": shmmem(var, "ks1").get("used"),
                                  "copy_loaded": [{"keys": int(m.group(1)), "seconds": float(m.group(2))}
                                                  for m in loaded if m],
                                  "directory_lines": lines[:20]}
        results["kamailio"] = kam
    finally:
        with contextlib.suppress(Exception):
            lab.down()
    results["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS / f"directory-{stamp}.json"
    output.write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    print(markdown(results))
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
