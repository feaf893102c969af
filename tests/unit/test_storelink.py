"""The lab's store link: relays while flowing; cut resets open connections and blackholes new
ones; heal relays again (an echo server stands for etcd)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from statestore.lab_process import alive
from statestore.storelink import StoreLink

ROOT = Path(__file__).resolve().parents[2]


async def _echo_server() -> tuple[asyncio.AbstractServer, str]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _round_trip(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.close()


def test_cut_resets_what_is_open_blackholes_what_comes_and_heal_relays_again() -> None:
    async def scenario() -> None:
        server, upstream = await _echo_server()
        link = StoreLink([upstream])
        port = (await link.listen())[upstream]
        assert await _round_trip(port, b"ping") == b"ping"

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"open")
        assert await reader.readexactly(4) == b"open"
        link.cut_off()
        assert await asyncio.wait_for(reader.read(10), 2) == b"", "an open connection is reset by the cut"
        writer.close()

        with pytest.raises(TimeoutError):
            await _round_trip(port, b"lost", timeout=0.3)  # accepted, never answered
        held_reader, held_writer = await asyncio.open_connection("127.0.0.1", port)
        while not link.held:  # the link's accept runs in this same loop: yield until it has
            await asyncio.sleep(0)
        link.heal()
        assert await asyncio.wait_for(held_reader.read(10), 2) == b"", "heal resets the blackholed"
        held_writer.close()
        assert await _round_trip(port, b"back") == b"back"
        server.close()

    asyncio.run(scenario())


def test_a_member_that_is_down_is_seen_as_down_through_the_link() -> None:
    async def scenario() -> None:
        server, upstream = await _echo_server()
        server.close()
        await server.wait_closed()
        link = StoreLink([upstream])
        port = (await link.listen())[upstream]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(10), 2) == b""
        writer.close()

    asyncio.run(scenario())


def test_the_process_writes_its_ports_and_obeys_usr1_usr2_and_term(tmp_path: Path) -> None:
    async def scenario() -> None:
        server, upstream = await _echo_server()
        ports_file = tmp_path / "ports.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "statestore.storelink", "--ports-file", str(ports_file), upstream, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None

        async def said(word: str) -> None:
            line = await asyncio.wait_for(process.stdout.readline(), 5)  # type: ignore[union-attr]
            assert line.decode().startswith(f"storelink: {word}"), line

        try:
            await said("listening")  # the ports file is written before
            assert alive(process.pid), "the lab knows its store links as its own processes"
            port = json.loads(ports_file.read_text())[upstream]
            assert await _round_trip(port, b"ping") == b"ping"
            os.kill(process.pid, signal.SIGUSR1)
            await said("cut")
            with pytest.raises(TimeoutError):
                await _round_trip(port, b"lost", timeout=0.3)
            os.kill(process.pid, signal.SIGUSR2)
            await said("healed")
            assert await _round_trip(port, b"back") == b"back"
        finally:
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 5) == 0
            await said("stopped")
            server.close()

    asyncio.run(scenario())


def test_bad_upstreams_are_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "statestore.storelink", "--ports-file", "/dev/null", "nohost"],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 2 and "HOST:PORT" in done.stderr
