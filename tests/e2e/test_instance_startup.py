"""How an instance starts (issue 6, finding 7): BLF_INSTANCE is required, and an instance
starts the same whichever python3 comes first on the PATH of the program starting it."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from statestore.lab import sip_options
from tests.e2e.conftest import ROOT, blfctl, free_port

EXTRA_INSTANCE = "ks4"
EXTRA_PORT = 5074
# Pythons that are not Debian's, as pyenv and conda install them.
FOREIGN_PYTHONS = ("/root/.pyenv/versions/*/bin/python3", os.path.expanduser("~/.pyenv/versions/*/bin/python3"),
                   "/opt/conda/bin/python3", "/opt/*/bin/python3", "/usr/local/bin/python3")


def foreign_python_bin() -> str | None:
    """The bin/ of a python3 that is not Debian's but of the same version: its prefix has
    the landmark (lib/python3.X/os.py) that the embedded interpreter looks for, so it
    would take that prefix for its own (one of another version is passed over)."""
    system = os.path.realpath("/usr/bin/python3")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for pattern in FOREIGN_PYTHONS:
        for candidate in sorted(glob.glob(pattern)):
            prefix = os.path.dirname(os.path.dirname(candidate))
            landmark = os.path.join(prefix, "lib", version, "os.py")
            if os.access(candidate, os.X_OK) and os.path.realpath(candidate) != system and os.path.exists(landmark):
                return os.path.dirname(candidate)
    return None


def start_alone(tmp_path: Path, instance: str | None) -> subprocess.Popen[bytes]:
    """One Kamailio in the foreground, as an operator's unit would start it."""
    env = {name: value for name, value in os.environ.items() if name != "BLF_INSTANCE"}
    env.update(BLF_KEMI_SCRIPT=str(ROOT / "kemi" / "blf_kemi.py"), BLF_AUTH_SECRET="s" * 32,
               BLF_ETCD="127.0.0.1:1", PATH="/usr/bin:/bin:" + env.get("PATH", ""))
    if instance is not None:
        env["BLF_INSTANCE"] = instance
    port = free_port()
    (tmp_path / "run").mkdir()
    command = ["/usr/sbin/kamailio", "-f", str(ROOT / "kamailio" / "kamailio.cfg"), "-Y", str(tmp_path / "run"),
               "-l", f"udp:127.0.0.1:{port}", "-DD", "-E"]
    log = (tmp_path / "kamailio.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


@pytest.mark.parametrize("instance", [None, "", "  "], ids=["unset", "empty", "blank"])
def test_an_instance_without_a_name_does_not_start(tmp_path: Path, instance: str | None) -> None:
    process = start_alone(tmp_path, instance)
    try:
        returncode = process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    log = (tmp_path / "kamailio.log").read_text(errors="replace")
    assert returncode not in (None, 0), f"an instance named {instance!r} started:\n{log[-2000:]}"
    assert "BLF_INSTANCE" in log, log[-2000:]


def test_an_instance_started_under_a_foreign_python_starts(lab: dict[str, tuple[str, int]]) -> None:
    """Started by a program whose PATH finds a pyenv (or conda) python3 first."""
    foreign = foreign_python_bin()
    if foreign is None:
        pytest.skip("no python3 other than Debian's on this machine")
    env = dict(os.environ, PATH=f"{foreign}{os.pathsep}{os.environ.get('PATH', '')}")
    started = subprocess.run([sys.executable, "-m", "statestore.cli", "lab", "start", EXTRA_INSTANCE], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, f"started with {foreign} first on PATH: {started.stdout}{started.stderr}"
        assert sip_options("127.0.0.1", EXTRA_PORT) == 200
    finally:
        blfctl("lab", "kill", EXTRA_INSTANCE, check=False)
