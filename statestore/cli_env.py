"""The environment file blfctl reads (the one the systemd units name in EnvironmentFile=),
so that an operator on a production host runs `blfctl show x@y` without flags.

`BLF_ENV_FILE` names it; by default /etc/blf/blf.env when that file exists. What the
process environment already holds wins over the file.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from pathlib import Path

DEFAULT_ENV_FILE = "/etc/blf/blf.env"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPED = re.compile(r"\\(.)")


class EnvFileError(ValueError):
    """An environment file that cannot be read or has a line that is not KEY=VALUE (exit 2)."""


def parse_env(text: str, source: str = "environment file") -> dict[str, str]:
    """KEY=VALUE lines as in etc/blf.env.example: blank lines and lines starting with `#`
    or `;` are skipped, an `export ` prefix is allowed, a value in single quotes is taken
    as written, one in double quotes with backslash escapes (\\" \\\\), an unquoted value
    stripped of surrounding blanks (a `#` inside it is part of it, as for systemd)."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not _NAME.fullmatch(name):
            raise EnvFileError(f"{source}:{number}: not KEY=VALUE: {raw.strip()}")
        found[name] = _value(value.strip(), f"{source}:{number}")
    return found


def _value(text: str, where: str) -> str:
    if not text or text[0] not in "'\"":
        return text
    quote = text[0]
    end = _closing_quote(text, quote)
    if end < 0:
        raise EnvFileError(f"{where}: no closing {quote}")
    rest = text[end + 1:].strip()
    if rest and not rest.startswith("#"):
        raise EnvFileError(f"{where}: text after the closing {quote}: {rest}")
    inner = text[1:end]
    return inner if quote == "'" else _ESCAPED.sub(r"\1", inner)


def _closing_quote(text: str, quote: str) -> int:
    index = 1
    while index < len(text):
        if quote == '"' and text[index] == "\\":
            index += 2
            continue
        if text[index] == quote:
            return index
        index += 1
    return -1


def env_file_path(environ: MutableMapping[str, str]) -> Path | None:
    """The file to read: BLF_ENV_FILE (which must exist), else the default if it exists."""
    named = environ.get("BLF_ENV_FILE", "").strip()
    if named:
        return Path(named)
    default = Path(DEFAULT_ENV_FILE)
    return default if default.is_file() else None


def load_env_file(environ: MutableMapping[str, str]) -> None:
    """Set in `environ` every variable of the environment file that it does not hold yet."""
    path = env_file_path(environ)
    if path is None:
        return
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvFileError(f"environment file {path}: {exc.strerror or exc}") from exc
    for name, value in parse_env(text, str(path)).items():
        environ.setdefault(name, value)
