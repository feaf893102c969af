"""The links between the lab's sites: a WAN emulator in user space (statestore.lab_sites).

    python -m statestore.lab_wan --config FILE --ready FILE

One process for the whole lab. In each site's network namespace it opens a TUN device
`wan0` (IPv4 packets, no header); the lab routes every other site's address through it.
A packet read from site A's `wan0` is written into the `wan0` of the site its destination
address belongs to, A's delay (`delay_ms`, A's egress towards the other sites) later. The
delay of one site is constant, so packets from it keep their order. Sites listed in the
config's "cut" exchange nothing with any other site: their packets are dropped, when
they are read and again when their time comes to be written (what was in flight is lost,
as in a real partition). SIGHUP reads the config's "cut" again and logs
`lab_wan: applied cut=[...]`; SIGTERM stops it (its TUN devices, hence the routes through
them, go with it: the sites are then partitioned from each other, never joined undelayed).

Why not `tc netem`: the kernels the lab runs on may have no sch_netem (this project's CI
VM has neither netem nor prio); a TUN device is everywhere, and it delays UDP (SIP between
instances) as well as TCP (etcd peers, instance -> member).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import json
import os
import signal
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
WAN_DEVICE = "wan0"
NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class Link:
    name: str
    netns: str
    address: str
    delay_ms: int


def links_of(config: dict[str, object]) -> list[Link]:
    sites = config.get("sites")
    assert isinstance(sites, list)
    return [Link(str(s["name"]), str(s["netns"]), str(s["address"]), int(s["delay_ms"])) for s in sites]


def destination(packet: bytes) -> str | None:
    """The IPv4 destination of a packet read from a TUN device; None for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return ".".join(str(octet) for octet in packet[16:20])


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def open_tun(netns: str) -> int:
    """A TUN device named wan0 created in network namespace `netns`; its descriptor."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(str(NETNS_DIR / netns), os.O_RDONLY)
    try:
        _setns(target)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", WAN_DEVICE.encode(), IFF_TUN | IFF_NO_PI))
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
    return fd


class Wan:
    def __init__(self, config_path: Path, links: list[Link]) -> None:
        self.config_path = config_path
        self.links = links
        self.by_address = {link.address: link for link in links}
        self.fds: dict[str, int] = {}
        self.cut: set[str] = set()

    def load_cut(self) -> None:
        config = json.loads(self.config_path.read_text())
        self.cut = {str(name) for name in config.get("cut", [])}
        _say(f"applied cut={sorted(self.cut)}")

    def blocked(self, source: Link, target: Link) -> bool:
        return source.name in self.cut or target.name in self.cut

    def received(self, loop: asyncio.AbstractEventLoop, source: Link) -> None:
        fd = self.fds[source.name]
        while True:
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                return
            address = destination(packet)
            target = self.by_address.get(address or "")
            if target is None or target is source or self.blocked(source, target):
                continue
            loop.call_later(source.delay_ms / 1000.0, self.deliver, source, target, packet)

    def deliver(self, source: Link, target: Link, packet: bytes) -> None:
        if self.blocked(source, target):
            return
        # The device's queue full, or the device gone: lost, as on a real link.
        with contextlib.suppress(OSError):
            os.write(self.fds[target.name], packet)


def _say(text: str) -> None:
    print(f"lab_wan: {text}", flush=True)


async def _run(config_path: Path, ready: Path) -> None:
    links = links_of(json.loads(config_path.read_text()))
    wan = Wan(config_path, links)
    for link in links:
        wan.fds[link.name] = open_tun(link.netns)
    wan.load_cut()
    loop = asyncio.get_running_loop()
    for link in links:
        loop.add_reader(wan.fds[link.name], wan.received, loop, link)
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, wan.load_cut)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    ready.write_text(json.dumps({link.name: WAN_DEVICE for link in links}))
    _say("links up: " + ", ".join(f"{link.name} {link.address} +{link.delay_ms} ms" for link in links))
    await stopping.wait()
    _say("stopping")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab_wan")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--ready", required=True, type=Path)
    args = parser.parse_args(argv)
    asyncio.run(_run(args.config, args.ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
