"""A real softphone for the end-to-end tests: Debian's baresip, driven headless.

baresip (package `baresip-core`) registers an account of the lab through one instance, over
TCP or UDP, and answers every call by itself (`answermode=auto`). No sound card: its audio
source and player are `aubridge` (what it would play is fed back as what it sends). No console either
(no `stdio` module): it runs with stdin closed and quits by itself after `lifetime` seconds if
a test leaves it behind.

Its configuration and its log (SIP trace included, `-s -v`) are kept under
`$BLF_VAR/phones/<user>/` (`config`, `accounts`, `baresip.log`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BARESIP = "baresip"
MODULES = "/usr/lib/baresip/modules"


def config_text(sip_port: int, extra: tuple[str, ...] = ()) -> str:
    """baresip's `config`: SIP on 127.0.0.1:`sip_port` (UDP and TCP), no audio device, no console;
    `extra` lines after (more modules and their settings)."""
    return "\n".join([
        "poll_method\t\tepoll",
        # baresip finds no network interface with an address in a namespace with only `lo`: name it.
        "net_interface\t\t127.0.0.1",
        f"sip_listen\t\t127.0.0.1:{sip_port}",
        "call_local_timeout\t120",
        "call_max_calls\t\t4",
        "audio_source\t\taubridge,nil",
        "audio_player\t\taubridge,nil",
        "audio_alert\t\taubridge,nil",
        f"module_path\t\t{MODULES}",
        "module\t\t\tg711.so",
        "module\t\t\taubridge.so",
        "module_tmp\t\taccount.so",
        "module_app\t\tmenu.so",
        *extra,
        "",
    ])


def account_line(
    user: str, domain: str, password: str, proxy: tuple[str, int], transport: str = "tcp", regint: int = 60,
    extra: str = "",
) -> str:
    """One line of baresip's `accounts`: register through `proxy` on `transport`, answer at once;
    `extra`: more account parameters (`;name=value...`)."""
    host, port = proxy
    return (
        f"<sip:{user}@{domain};transport={transport}>;auth_pass={password};"
        f'outbound="sip:{host}:{port};transport={transport}";regint={regint};'
        f"answermode=auto;mwi=no;audio_codecs=PCMU,PCMA{extra}\n"
    )


@dataclass(frozen=True)
class Traced:
    """One SIP message in baresip's trace (`-s`): transport, source, destination, first line."""

    transport: str
    source: str
    destination: str
    first_line: str


_TRACE = re.compile(r"^(TCP|UDP|TLS) (\S+) -> (\S+)\r?\n([^\r\n]*)", re.MULTILINE)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A whole traced message: up to the next trace mark ("#" line) or the end of the log.
_TRACE_MESSAGE = re.compile(r"^(TCP|UDP|TLS) (\S+) -> (\S+)\r?\n([^\r\n]*)((?:.|\n)*?)(?=^\S*#\s*$|\Z)", re.MULTILINE)


class Baresip:
    """One baresip process with its own configuration directory."""

    def __init__(
        self, directory: Path, user: str, domain: str, password: str, proxy: tuple[str, int],
        sip_port: int, transport: str = "tcp", lifetime: int = 120,
        extra_config: tuple[str, ...] = (), account_params: str = "", contacts: str = "",
    ) -> None:
        self.directory, self.user, self.domain, self.transport = directory, user, domain, transport
        self.log = directory / "baresip.log"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        (directory / "config").write_text(config_text(sip_port, extra_config))
        (directory / "accounts").write_text(
            account_line(user, domain, password, proxy, transport, extra=account_params)
        )
        (directory / "contacts").write_text(contacts)
        self.log.write_bytes(b"")
        # Its output comes through a pipe: a thread copies it to the log and wakes wait_for.
        self.logged = threading.Condition()
        self.ended = False
        self.process = subprocess.Popen(
            [BARESIP, "-f", str(directory), "-s", "-v", "-t", str(lifetime)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "TERM": "dumb"},
        )
        self.reader = threading.Thread(target=self._copy_output, name=f"baresip-{user}", daemon=True)
        self.reader.start()

    def _copy_output(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as output, open(self.log, "ab") as out:
            while chunk := output.read1(65536):
                out.write(chunk)
                out.flush()
                with self.logged:
                    self.logged.notify_all()
        with self.logged:
            self.ended = True
            self.logged.notify_all()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float, after: int = 0) -> int:
        """Wait until `needle` is in the log (past offset `after`); its offset. AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self.logged:
            while True:
                found = self.text().find(needle, after)
                if found >= 0:
                    return found
                if self.ended:
                    self.process.wait(timeout=5)
                    raise AssertionError(f"baresip exited ({self.process.returncode}); log {self.log}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"baresip: no {needle!r} within {timeout}s; log {self.log}")
                self.logged.wait(left)

    def wait_registered(self, timeout: float = 10.0) -> None:
        # e.g. "pat@example.com: {0/TCP/v4} 200 OK (blf-kamailio) [1 binding]"
        self.wait_for(f"{self.user}@{self.domain}: {{0/{self.transport.upper()}/v4}} 200 OK", timeout)

    def trace(self) -> list[Traced]:
        return [Traced(*match.groups()) for match in _TRACE.finditer(self.text())]

    def flow(self) -> str:
        """The phone's own address of the flow it registered on (source of its first REGISTER)."""
        for message in self.trace():
            if message.first_line.startswith("REGISTER "):
                return message.source
        raise AssertionError(f"baresip sent no REGISTER; log {self.log}")

    def summary(self, lines: int = 40) -> str:
        """The last SIP messages of its trace, one line each (source -> destination, first
        line, CSeq, the first PIDF <basic>): what a failure message shows when the log file
        is gone (CI)."""
        found = []
        for match in _TRACE_MESSAGE.finditer(ANSI.sub("", self.text())):
            source, destination, first_line, message = match.group(2, 3, 4, 5)
            cseq = re.search(r"^CSeq: ([^\r\n]*)", message, re.MULTILINE)
            basic = re.search(r"<basic>(\w+)</basic>", message)
            found.append(
                f"{source} -> {destination}: {first_line} [{cseq.group(1) if cseq else ''}]"
                f"{' ' + basic.group(1) if basic else ''}"
            )
        return "\n".join(found[-lines:])

    def received(self, method: str) -> list[Traced]:
        return [m for m in self.trace() if m.first_line.startswith(method + " ")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # unregisters, then exits
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.reader.join(timeout=5)  # the log is whole


def available() -> bool:
    return shutil.which(BARESIP) is not None and os.path.isdir(MODULES)
