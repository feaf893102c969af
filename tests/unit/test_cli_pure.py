"""blfctl's pure pieces (issue 15 part 6): the environment file, the one-line "store
unreachable" message, the NAT shown for a registration, the account-add message and the
lab table that `lab up` and `lab status` both print."""

from __future__ import annotations

from pathlib import Path

import pytest

from statestore import cli_errors
from statestore.cli import build_parser
from statestore.cli_directory import account_added
from statestore.cli_env import EnvFileError, env_file_path, load_env_file, parse_env
from statestore.cli_lab import status_lines
from statestore.domain.nat import reached_behind_nat


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BLF_ETCD=127.0.0.1:2379\n", {"BLF_ETCD": "127.0.0.1:2379"}),
        ("# comment\n; also a comment\n\n   \nA=1\n", {"A": "1"}),
        ("export BLF_ZONES=z1=a:1,b:2\n", {"BLF_ZONES": "z1=a:1,b:2"}),
        ("A = spaced value  \n", {"A": "spaced value"}),
        ("A='single # kept \\n'\n", {"A": "single # kept \\n"}),
        ('A="double \\"quoted\\" \\\\ x"\n', {"A": 'double "quoted" \\ x'}),
        ('A="x" # trailing comment\n', {"A": "x"}),
        ("A=unquoted # kept, as systemd does\n", {"A": "unquoted # kept, as systemd does"}),
        ("A=\nB=2\nA=3\n", {"A": "3", "B": "2"}),
        ("A=a=b\n", {"A": "a=b"}),
    ],
)
def test_env_file_lines(text: str, expected: dict[str, str]) -> None:
    assert parse_env(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("JUSTAWORD\n", "f:1: not KEY=VALUE: JUSTAWORD"),
        ("A=1\n1BAD=2\n", "f:2: not KEY=VALUE"),
        ('A="open\n', "f:1: no closing \""),
        ("A='x' y\n", "f:1: text after the closing '"),
        ("export\n", "f:1: not KEY=VALUE"),
    ],
)
def test_env_file_refuses_what_is_not_key_value(text: str, message: str) -> None:
    with pytest.raises(EnvFileError, match=message.replace('"', '.')):
        parse_env(text, "f")


def test_the_process_environment_wins_over_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "blf.env"
    env_file.write_text("BLF_ETCD=10.0.0.1:2379\nBLF_ZONES=z1=10.0.0.1:2379\n")
    environ = {"BLF_ENV_FILE": str(env_file), "BLF_ETCD": "127.0.0.1:1"}
    load_env_file(environ)
    assert environ == {"BLF_ENV_FILE": str(env_file), "BLF_ETCD": "127.0.0.1:1", "BLF_ZONES": "z1=10.0.0.1:2379"}


def test_a_named_env_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(EnvFileError, match="environment file .*missing.env"):
        load_env_file({"BLF_ENV_FILE": str(tmp_path / "missing.env")})


def test_without_blf_env_file_the_default_is_read_only_if_present() -> None:
    found = env_file_path({})
    assert found is None or str(found) == "/etc/blf/blf.env"


@pytest.mark.parametrize(
    ("probes", "detail", "expected"),
    [
        ([("127.0.0.1:1", cli_errors.REFUSED_CONNECTION)], "etcd at 127.0.0.1:1: ConnectionTimeoutError: x",
         "etcd unreachable at 127.0.0.1:1: connection refused"),
        ([("10.9.9.9:2379", cli_errors.NO_CONNECTION)], "", "etcd unreachable at 10.9.9.9:2379: connection timed out"),
        ([("a:1", cli_errors.CONNECTED)], "etcdserver: no leader", "etcd unreachable at a:1: no leader"),
        ([("a:1", cli_errors.CONNECTED)], "etcdserver: mvcc: database space exceeded",
         "etcd unreachable at a:1: database space exceeded (the NOSPACE alarm: blfctl store maintain)"),
        ([("a:1", cli_errors.CONNECTED)], "ConnectionTimeoutError",
         "etcd unreachable at a:1: connected, but no answer in time (stopped, overloaded or no leader)"),
        ([("a:1", cli_errors.REFUSED_CONNECTION), ("b:2", cli_errors.NO_CONNECTION)], "",
         "etcd unreachable at a:1: connection refused; b:2: connection timed out"),
        ([("192.0.2.1:2379", "Network is unreachable")], "",
         "etcd unreachable at 192.0.2.1:2379: Network is unreachable"),
        ([], "no member of zone z1 answers\nmore", "etcd unreachable: no member of zone z1 answers"),
    ],
)
def test_store_unreachable_is_one_line_naming_each_endpoint(
    probes: list[tuple[str, str]], detail: str, expected: str
) -> None:
    assert cli_errors.describe_unreachable(probes, detail) == expected


def test_a_port_with_nothing_listening_is_refused() -> None:
    import socket

    with socket.socket() as sock:  # bound, not listening: connecting to it is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert cli_errors.probe_endpoint(f"127.0.0.1:{port}") == cli_errors.REFUSED_CONNECTION
        sock.listen()
        assert cli_errors.probe_endpoint(f"127.0.0.1:{port}") == cli_errors.CONNECTED


@pytest.mark.parametrize(
    ("contact", "received", "recorded", "expected"),
    [
        # TCP: the source port is ephemeral; only the address tells.
        ("sip:alice@203.0.113.5:5060;transport=tcp", "tcp:203.0.113.5:49152", True, False),
        ("sip:alice@192.168.1.20:5060;transport=tcp", "tcp:203.0.113.5:49152", True, True),
        ("sips:alice@203.0.113.5", "tls:203.0.113.5:40000", True, False),
        ("sip:alice@203.0.113.5;transport=ws", "ws:203.0.113.5:40000", True, False),
        # UDP: address and port.
        ("sip:alice@203.0.113.5:5062", "udp:203.0.113.5:5062", True, False),
        ("sip:alice@203.0.113.5", "udp:203.0.113.5:5060", True, False),
        ("sip:alice@203.0.113.5:5062", "udp:203.0.113.5:1024", False, True),
        ("sip:alice@192.168.1.20:5060", "udp:203.0.113.5:5060", False, True),
        ("sip:alice@[2001:db8::1]:5060", "udp:[2001:DB8::1]:5060", True, False),
        # Unknown source: what the registrar recorded.
        ("sip:alice@203.0.113.5", "", True, True),
        ("sip:alice@203.0.113.5", "", False, False),
    ],
)
def test_nat_shown_for_a_registration(contact: str, received: str, recorded: bool, expected: bool) -> None:
    assert reached_behind_nat(contact, received, recorded) is expected


@pytest.mark.parametrize(
    ("existed", "aliases", "expected"),
    [
        (False, [], "account a@x.com added"),
        (False, ["101", "102"], "account a@x.com added with aliases 101, 102"),
        (True, [], "account a@x.com: password changed"),
        (True, ["103"], "account a@x.com: password changed; aliases 103 added"),
    ],
)
def test_account_add_says_added_or_password_changed(existed: bool, aliases: list[str], expected: str) -> None:
    assert account_added("a@x.com", existed, aliases) == expected


STATUS = {
    "zones": {"z1": {"members": {"z1-etcd1": {"client": "127.0.0.1:2379", "pid": 10, "alive": True}}}},
    "memcached": {"address": "127.0.0.1:11211", "pid": 11, "alive": True},
    "instances": {
        "ks1": {"sip": "127.0.0.1:5071", "pid": 12, "alive": True, "store": "127.0.0.1:2479", "config": "dropin",
                "metrics": "127.0.0.1:9471"},
        "ks2": {"sip": "127.0.0.1:5072", "pid": 13, "alive": False, "store": "127.0.0.1:2480"},
    },
}


def test_lab_table() -> None:
    assert status_lines(STATUS) == [
        "z1-etcd1   127.0.0.1:2379 pid=10 up (etcd, zone z1)",
        "memcached  127.0.0.1:11211 pid=11 up",
        "ks1        127.0.0.1:5071 pid=12 up (store 127.0.0.1:2479, config dropin, metrics 127.0.0.1:9471)",
        "ks2        127.0.0.1:5072 pid=13 down (store 127.0.0.1:2480, config full, metrics none)",
    ]


def test_lab_up_and_status_take_the_same_json_flag() -> None:
    parser = build_parser()
    assert parser.parse_args(["lab", "up", "--json"]).json is True
    assert parser.parse_args(["lab", "status", "--json"]).json is True
    assert parser.parse_args(["lab", "up"]).json is False


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert "exit codes:" in shown
    for code in range(5):
        assert f"\n  {code}  " in shown
