"""blfctl: the lab, provisioning and inspection of the StateStore.

The entry point: the parser and the command table put together from the statestore.cli_*
modules (one a command group), and the one place that reports every error."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from statestore import (
    cli_accounts,
    cli_directory,
    cli_env,
    cli_errors,
    cli_inspect,
    cli_lab,
    cli_metrics,
    cli_presence,
    cli_run,
    cli_show,
    cli_store,
    cli_watch,
)
from statestore.cli_errors import Refused
from statestore.domain.directory import DirectoryError, NameTaken, UnknownAccount
from statestore.domain.errors import Contended, StoreUnavailable
from statestore.lab import LabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blfctl", description="Clustered BLF lab and StateStore tool", epilog=cli_errors.EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--etcd", help="zone z1's etcd members, host:port[,host:port...] (default: BLF_ZONES, "
                        "else the lab's zones when a lab is up, else BLF_ETCD or 127.0.0.1:2379)")
    sub = parser.add_subparsers(dest="command", required=True)

    cli_lab.add_parsers(sub)
    account, alias = cli_directory.add_parsers(sub)
    cli_accounts.add_parsers(account, alias)
    cli_show.add_parser(sub)
    cli_store.add_parsers(sub)
    cli_presence.add_parsers(sub)
    cli_inspect.add_parsers(sub)
    cli_watch.add_parser(sub)
    cli_metrics.add_parsers(sub)
    cli_run.add_parser(sub)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "lab": cli_lab.cmd_lab, **cli_directory.COMMANDS, **cli_accounts.COMMANDS, **cli_show.COMMANDS,
    **cli_store.COMMANDS, **cli_presence.COMMANDS, **cli_inspect.COMMANDS, "watch": cli_watch.cmd_watch,
    **cli_metrics.COMMANDS, **cli_run.COMMANDS,
}


def main(argv: list[str] | None = None) -> int:
    """Every error of every command is reported here, one way: `blfctl: <message>` on
    stderr and the exit code of statestore.cli_errors (listed in `blfctl --help`)."""
    try:
        cli_env.load_env_file(os.environ)  # before the parser: its defaults read the environment
    except cli_env.EnvFileError as exc:
        return _fail(str(exc), cli_errors.USAGE)
    args = build_parser().parse_args(argv)
    command = f"{args.command} {args.subcommand}" if getattr(args, "subcommand", None) else args.command
    try:
        return COMMANDS[command](args)
    except DirectoryError as exc:
        # Bad names are refused before anything is written (2); what the store refuses
        # (an alias taken, an unknown account) is 1.
        return _fail(str(exc), cli_errors.REFUSED if isinstance(exc, NameTaken | UnknownAccount) else cli_errors.USAGE)
    except (Refused, LabError) as exc:
        return _fail(str(exc), cli_errors.REFUSED)
    except Contended as exc:
        return _fail(f"{exc}; try again", cli_errors.REFUSED)
    except (cli_presence.Invalid, cli_errors.Malformed) as exc:
        return _fail(str(exc), cli_errors.USAGE)
    except StoreUnavailable as exc:
        return _fail(cli_errors.unreachable_message(exc.endpoint, str(exc)), cli_errors.UNREACHABLE)


def _fail(message: str, code: int) -> int:
    print(f"blfctl: {message}", file=sys.stderr)
    return code

if __name__ == "__main__":
    sys.exit(main())
