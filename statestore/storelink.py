"""The lab's store link: a TCP relay between one instance and every etcd member it reaches,
so that `blfctl lab cut NAME` can cut that instance off from the store and not from phones.

    python -m statestore.storelink --ports-file FILE HOST:PORT [HOST:PORT ...]

One process per instance; one listening port on 127.0.0.1 per member (chosen by the kernel,
written to FILE as {"HOST:PORT": listening port} once every port listens). The instance is
given those ports as its BLF_ETCD and BLF_ZONES. SIGUSR1 cuts: every open connection is
reset and new ones are accepted but never answered (a blackhole, as a partition looks to a
client: its requests time out, it does not get a quick "refused"). SIGUSR2 heals: the
blackholed connections are reset (the client reconnects at once) and new ones are relayed
again. SIGTERM stops it.

Why a relay and not nftables: the lab runs on loopback, where every instance and every
member share 127.0.0.1; a rule that drops one instance's traffic to etcd needs to tell its
sockets apart (a cgroup per instance, `socket cgroupv2`), which needs root, cgroup v2
delegated to us and nftables, and a mistake cuts the lead's lab too. A relay per instance
needs none of that, cuts exactly one instance, and is out of the path when the lab is
started with `--direct-store` (the benchmarks: no extra hop to measure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from statestore.zones import parse_endpoints

HOST = "127.0.0.1"
CHUNK = 65536


class StoreLink:
    """The relays of one instance, cut or flowing."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams
        self.cut = False
        self.relayed: set[asyncio.StreamWriter] = set()
        self.held: set[asyncio.StreamWriter] = set()
        self.servers: dict[str, asyncio.Server] = {}

    async def listen(self) -> dict[str, int]:
        for upstream in self.upstreams:
            host, _, port = upstream.rpartition(":")

            async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               to: tuple[str, int] = (host, int(port))) -> None:
                await self.connection(reader, writer, to)

            self.servers[upstream] = await asyncio.start_server(accepted, HOST, 0)
        return {upstream: int(server.sockets[0].getsockname()[1]) for upstream, server in self.servers.items()}

    def cut_off(self) -> None:
        self.cut = True
        _say(f"cut: {len(self.relayed) // 2} connections reset, new ones blackholed")
        _reset(self.relayed)

    def heal(self) -> None:
        self.cut = False
        _say(f"healed: {len(self.held)} blackholed connections reset, relaying again")
        _reset(self.held)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         upstream: tuple[str, int]) -> None:
        if self.cut:
            await self._blackhole(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*upstream)
        except OSError:
            writer.transport.abort()  # the member is down: the client sees what it would see direct
            return
        pair = {writer, up_writer}
        self.relayed |= pair
        try:
            with contextlib.suppress(OSError, ConnectionError):
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.relayed -= pair
            _reset(pair)

    async def _blackhole(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read and drop everything until the client gives up or the link heals."""
        self.held.add(writer)
        try:
            with contextlib.suppress(OSError, ConnectionError):
                while await reader.read(CHUNK):
                    pass
        finally:
            self.held.discard(writer)
            writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


def _say(line: str) -> None:
    """One line to stdout (the lab's log of this link; a test reads it to know a signal was handled)."""
    print(f"storelink: {line}", flush=True)


def _reset(writers: set[asyncio.StreamWriter]) -> None:
    for writer in list(writers):
        writer.transport.abort()


async def serve(upstreams: list[str], ports_file: Path) -> None:
    link = StoreLink(upstreams)
    ports = await link.listen()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, link.cut_off)
    loop.add_signal_handler(signal.SIGUSR2, link.heal)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    tmp = ports_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports))
    tmp.replace(ports_file)
    _say(f"listening {json.dumps(ports)}")
    await stop.wait()
    for server in link.servers.values():
        server.close()
    _reset(link.relayed | link.held)
    _say("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m statestore.storelink", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports-file", type=Path, required=True)
    parser.add_argument("upstreams", nargs="+", metavar="HOST:PORT")
    args = parser.parse_args(argv)
    try:
        upstreams = parse_endpoints(",".join(args.upstreams))
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(serve(upstreams, args.ports_file))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
