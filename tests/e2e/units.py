"""A tiny stand-in for systemd, enough to run the units etc/provision/provision.sh installs
inside a network namespace standing in for a VM (tests/e2e/test_provision.py).

It reads what systemd would: `User=`, `Group=`, `Environment=`, `EnvironmentFile=` (a leading
`-`: optional), `ExecStartPre=` (a leading `+`: as root) and `ExecStart=`, with `%i` and
`${NAME}`/`$NAME` expanded as systemd does (from the unit's environment). Nothing else
(no dependencies, no restart, no readiness): the test waits on the services itself.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from statestore.lab_sites import spawn_in

_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass
class Unit:
    name: str
    settings: dict[str, list[str]] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        values = self.settings.get(key)
        return values[-1] if values else default

    def all(self, key: str) -> list[str]:
        return self.settings.get(key, [])


def load(directory: Path, unit: str) -> Unit:
    """`unit` (e.g. blf-kamailio@ks1.service) from `directory`, from its template if it is an
    instance; every `%i` replaced by the instance name."""
    prefix, at, rest = unit.partition("@")
    instance = rest.rsplit(".", 1)[0] if at else ""
    path = directory / (f"{prefix}@.{rest.rsplit('.', 1)[1]}" if at else unit)
    parsed = Unit(unit)
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        parsed.settings.setdefault(key.strip(), []).append(value.strip().replace("%i", instance))
    return parsed


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as systemd's EnvironmentFile= reads them."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values


def environment(unit: Unit) -> dict[str, str]:
    env: dict[str, str] = {}
    for assignment in unit.all("Environment"):
        for word in shlex.split(assignment):
            key, _, value = word.partition("=")
            env[key] = value
    for path in unit.all("EnvironmentFile"):
        optional = path.startswith("-")
        file = Path(path.lstrip("-"))
        if file.exists() or not optional:
            env.update(read_env_file(file))
    return env


def command(line: str, env: dict[str, str]) -> list[str]:
    """An Exec line's words, `${NAME}` (one word) and `$NAME` expanded from `env`."""
    return [_VARIABLE.sub(lambda match: env.get(match.group(1) or match.group(2), ""), word)
            for word in shlex.split(line)]


def as_user(unit: Unit, argv: list[str]) -> list[str]:
    user = unit.get("User")
    if not user:
        return argv
    group = unit.get("Group", user)
    return ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", *argv]


def start(directory: Path, name: str, netns: str, log: Path) -> int:
    """Run the unit's ExecStartPre lines to completion, then start its ExecStart in `netns`
    (as its User); the PID (the leader of a session of its own)."""
    unit = load(directory, name)
    env = environment(unit)
    for pre in unit.all("ExecStartPre"):
        privileged = pre.startswith("+")
        argv = command(pre.lstrip("+-"), env)
        subprocess.run(argv if privileged else as_user(unit, argv), check="-" not in pre[:2], env=env)
    return spawn_in(netns, as_user(unit, command(unit.get("ExecStart"), env)), log, env)
