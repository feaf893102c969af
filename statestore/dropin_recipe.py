"""The drop-in recipe of docs/dropin.md, applied mechanically to a native configuration.

docs/dropin.md gives each addition as two fenced blocks: ```after (one line of the stock
configuration, matched exactly once, whitespace at its ends aside) followed by ```add (the
lines to put after it). The lab builds each drop-in instance's configuration from the
pristine stock copy (kamailio/stock/kamailio.cfg) with exactly these blocks, so the page is
the recipe, tested as written; an anchor that is missing or not unique is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS_PAGE = ROOT / "docs" / "dropin.md"
STOCK_CONFIG = ROOT / "kamailio" / "stock" / "kamailio.cfg"
INCLUDE_FILE = ROOT / "kamailio" / "blf.cfg"
# The budget: at most this many lines added to the operator's routes, besides the include.
MAX_ADDED_LINES = 10

# An include directive of a Kamailio configuration, with its (relative) file name.
_INCLUDE = re.compile(r'^[ \t]*(?:include_file|import_file)[ \t]+"([^"]+)"', re.MULTILINE)
_FENCE = re.compile(r"^```(after|add)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


class RecipeError(ValueError):
    """The recipe cannot be applied as written."""


@dataclass(frozen=True)
class Addition:
    anchor: str  # the stock line it goes after (stripped)
    lines: tuple[str, ...]

    @property
    def is_include(self) -> bool:
        return any(line.strip().startswith(("include_file", "import_file")) for line in self.lines)


def additions(page: str) -> list[Addition]:
    """The page's additions, in order: each ```after block followed by its ```add block."""
    found: list[Addition] = []
    anchor: str | None = None
    for match in _FENCE.finditer(page):
        kind, body = match.group(1), match.group(2)
        if kind == "after":
            if anchor is not None:
                raise RecipeError(f"anchor {anchor!r} has no ```add block")
            lines = [line for line in body.splitlines() if line.strip()]
            if len(lines) != 1:
                raise RecipeError(f"an ```after block names exactly one line, not {len(lines)}")
            anchor = lines[0].strip()
        else:
            if anchor is None:
                raise RecipeError("an ```add block without an ```after block before it")
            found.append(Addition(anchor, tuple(body.rstrip("\n").splitlines())))
            anchor = None
    if anchor is not None:
        raise RecipeError(f"anchor {anchor!r} has no ```add block")
    return found


def added_lines(recipe: list[Addition]) -> int:
    """Lines added besides the include (blank lines and comments do not count)."""
    return sum(
        1
        for addition in recipe
        if not addition.is_include
        for line in addition.lines
        if line.strip() and not line.strip().startswith("#")
    )


def apply(stock: str, recipe: list[Addition]) -> str:
    """The stock configuration with every addition put after its anchor line."""
    lines = stock.splitlines()
    for addition in recipe:
        places = [index for index, line in enumerate(lines) if line.strip() == addition.anchor]
        if len(places) != 1:
            raise RecipeError(
                f"anchor {addition.anchor!r} is in the configuration {len(places)} times (it must be once)"
            )
        lines[places[0] + 1:places[0] + 1] = list(addition.lines)
    return "\n".join(lines) + "\n"


def include_files(first: Path = INCLUDE_FILE) -> list[Path]:
    """The include file and every file it includes, in turn, by a name relative to the
    including file's directory (where Kamailio 5.6 looks after its working directory): what
    an operator copies beside its configuration."""
    found: list[Path] = []
    pending = [first]
    while pending:
        path = pending.pop(0)
        if path not in found:
            found.append(path)
            pending.extend(path.parent / name for name in _INCLUDE.findall(path.read_text()))
    return found


def build(target_dir: Path, page: Path = DOCS_PAGE, stock: Path = STOCK_CONFIG) -> Path:
    """Write the drop-in configuration (stock + the page's additions) and the include files
    beside it into target_dir; the configuration's path."""
    recipe = additions(page.read_text())
    config = apply(stock.read_text(), recipe)
    target_dir.mkdir(parents=True, exist_ok=True)
    for source in include_files():
        (target_dir / source.name).write_text(source.read_text())
    path = target_dir / "kamailio.cfg"
    path.write_text(config)
    return path
