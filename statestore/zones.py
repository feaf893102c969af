"""Domain zones (issue 14): which etcd cluster holds which zone, as configured.

A zone is its own etcd cluster of 1 or 3 members. Where the zones are is written in one
variable, `BLF_ZONES=z1=h:p,h:p,h:p;z2=h:p,...` (zones in order, the first is the default
zone of a new domain; each zone's member client endpoints, comma separated). Without it:
the lab's zones when a lab is up (its state file), else one zone `z1` at BLF_ETCD (itself a
comma-separated list of one zone's members) or 127.0.0.1:2379.

Parsing and formatting are pure; `configured_zones` reads the state file it is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_ZONE = "z1"
DEFAULT_ENDPOINT = "127.0.0.1:2379"
ZONE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")

Zones = dict[str, list[str]]


def parse_endpoints(text: str) -> list[str]:
    """`h:p,h:p,...` -> ["h:p", ...] (order kept); ValueError names what is wrong."""
    endpoints = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in endpoints):
        raise ValueError(f"endpoint list {text!r}: expected HOST:PORT[,HOST:PORT...] with no empty entry")
    for endpoint in endpoints:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint {endpoint!r}: expected HOST:PORT with a port from 1 to 65535")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"endpoint list {text!r}: an endpoint is listed twice")
    return endpoints


def parse_zones(text: str) -> Zones:
    """`z1=h:p,h:p;z2=h:p` -> {"z1": ["h:p", "h:p"], "z2": ["h:p"]}, zones in the order given.

    ValueError for an empty text, a zone without `=`, a bad zone name, a zone named twice,
    a bad endpoint, or one endpoint in two zones (a member belongs to one cluster)."""
    zones: Zones = {}
    seen: dict[str, str] = {}
    segments = [segment.strip() for segment in text.split(";")]
    if not any(segments):
        raise ValueError("BLF_ZONES is empty: expected ZONE=HOST:PORT[,HOST:PORT...][;ZONE=...]")
    for segment in segments:
        if not segment:
            continue  # a trailing or doubled ';'
        name, sep, endpoints = segment.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"zone {segment!r}: expected ZONE=HOST:PORT[,HOST:PORT...]")
        if not ZONE_NAME.match(name):
            raise ValueError(f"zone name {name!r}: letters, digits, '-' and '_', starting with a letter or digit")
        if name in zones:
            raise ValueError(f"zone {name} is given twice")
        try:
            zones[name] = parse_endpoints(endpoints)
        except ValueError as exc:
            raise ValueError(f"zone {name}: {exc}") from exc
        for endpoint in zones[name]:
            if endpoint in seen:
                raise ValueError(f"endpoint {endpoint} is in zones {seen[endpoint]} and {name}")
            seen[endpoint] = name
    return zones


def format_zones(zones: Mapping[str, Sequence[str]]) -> str:
    """The inverse of parse_zones: {"z1": ["h:p"], "z2": [...]} -> "z1=h:p;z2=..."."""
    return ";".join(f"{name}={','.join(endpoints)}" for name, endpoints in zones.items())


def lab_zones(state: Mapping[str, object]) -> Zones:
    """The zones of a lab's state (var/lab.json): each member's client endpoint, in order;
    empty when the lab is down."""
    zones: Zones = {}
    raw = state.get("zones")
    if not isinstance(raw, dict):
        return zones
    for name, zone in raw.items():
        members = zone.get("members", {}) if isinstance(zone, dict) else {}
        endpoints = [str(member["client"]) for member in members.values() if isinstance(member, dict)]
        if endpoints:
            zones[str(name)] = endpoints
    return zones


def configured_zones(environ: Mapping[str, str], lab_state_path: Path | None) -> Zones:
    """BLF_ZONES if set; else the lab's zones if a lab is up; else zone z1 at BLF_ETCD (or
    127.0.0.1:2379)."""
    if environ.get("BLF_ZONES", "").strip():
        return parse_zones(environ["BLF_ZONES"])
    if lab_state_path is not None and lab_state_path.exists():
        zones = lab_zones(json.loads(lab_state_path.read_text()))
        if zones:
            return zones
    return {DEFAULT_ZONE: parse_endpoints(environ.get("BLF_ETCD", "").strip() or DEFAULT_ENDPOINT)}
