"""The lab's guards: instance names, busy ports, PIDs that are no longer the lab's."""

from __future__ import annotations

import os
import socket

import pytest

from statestore.lab import LabError, instance_port
from statestore.lab_kamailio import kamailio_environment
from statestore.lab_process import alive
from statestore.lab_process import require_free as _require_free


@pytest.mark.parametrize(("name", "port"), [("ks1", 5071), ("ks2", 5072), ("ks12", 5082)])
def test_instance_n_listens_on_5070_plus_n(name, port):
    assert instance_port(name) == port


@pytest.mark.parametrize("name", ["ks0", "ks", "node1", "ksx"])
def test_other_instance_names_are_refused(name):
    with pytest.raises(LabError):
        instance_port(name)


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_a_port_someone_holds_is_refused_with_a_clear_error(kind):
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(LabError, match=f"127.0.0.1:{port} is in use"):
            _require_free("etcd", f"127.0.0.1:{port}", kind)


def test_a_pid_that_is_not_a_lab_program_is_not_alive():
    assert not alive(os.getpid())  # this is python, not kamailio/etcd/memcached
    assert not alive(None) and not alive(0)


def test_instances_find_debian_python_first_whoever_starts_them():
    """A caller under pyenv or conda puts its Python's bin/ first and may set PYTHONHOME
    (issue 6, finding 7): the embedded interpreter would take that prefix for its own."""
    caller = {"PATH": "/root/.pyenv/versions/3.11.7/bin:/usr/local/bin:/usr/bin:/bin", "PYTHONHOME": "/opt/conda",
              "BLF_ETCD": "127.0.0.1:2379"}
    env = kamailio_environment(caller)
    assert env["PATH"] == "/usr/bin:/bin:/root/.pyenv/versions/3.11.7/bin:/usr/local/bin"
    assert "PYTHONHOME" not in env and env["BLF_ETCD"] == "127.0.0.1:2379"
    assert kamailio_environment({})["PATH"] == "/usr/bin:/bin"
