"""Prometheus text exposition: read what an instance serves, merge the instances' series.

Pure: `blfctl metrics` (statestore/cli_metrics.py) fetches, this reads and writes text.
xhttp_prom (Kamailio 5.6) prints samples only, `name{a="x", b="y"} value timestamp_ms`,
no HELP or TYPE: those come from the declarations (statestore.metrics).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from statestore.metrics import BY_NAME, METRICS, Kind

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


class ExpositionError(ValueError):
    """A line that is not a sample of the text format."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)


def parse(text: str) -> list[Sample]:
    """The samples of an exposition; comments and blank lines skipped, timestamps dropped."""
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = _SAMPLE.match(line)
        if found is None:
            raise ExpositionError(f"line {number}: not a sample: {line!r}")
        name, labels, value = found.group(1), found.group(2) or "", found.group(3)
        try:
            samples.append(Sample(name, _labels(labels, number), float(value)))
        except ValueError as exc:
            raise ExpositionError(f"line {number}: {exc}") from exc
    return samples


def _labels(text: str, number: int) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    position = 0
    while position < len(text.rstrip()):
        found = _LABEL.match(text, position)
        if found is None:
            raise ExpositionError(f"line {number}: bad labels {text!r}")
        pairs.append((found.group(1), found.group(2)))
        position = found.end()
    return tuple(pairs)


def family(name: str) -> str:
    """The family a sample name belongs to: a declared histogram's _bucket/_sum/_count
    belong to it."""
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in BY_NAME and BY_NAME[base].kind is Kind.HISTOGRAM:
            return base
    return name


def with_instance(samples: Iterable[Sample], instance: str) -> list[Sample]:
    """The samples labelled instance=`instance` first; their own labels kept after it (an
    `instance` label of their own is replaced)."""
    return [
        Sample(s.name, (("instance", instance), *(pair for pair in s.labels if pair[0] != "instance")), s.value)
        for s in samples
    ]


def merge(by_instance: Mapping[str, Sequence[Sample]], up: Mapping[str, bool]) -> str:
    """One exposition of every instance's samples, each labelled with its instance; HELP and
    TYPE once per family (declared families first, in declaration order, then the others by
    name, untyped); `blf_scrape_up{instance}` 1 or 0 for every instance asked."""
    families: dict[str, list[Sample]] = {}
    for instance in sorted(by_instance):
        for sample in with_instance(by_instance[instance], instance):
            families.setdefault(family(sample.name), []).append(sample)
    order = [m.name for m in METRICS if m.name in families] + sorted(n for n in families if n not in BY_NAME)
    lines: list[str] = []
    for name in order:
        declared = BY_NAME.get(name)
        if declared is not None:
            lines += [f"# HELP {name} {declared.help}", f"# TYPE {name} {declared.kind.value}"]
        lines += [render(sample) for sample in families[name]]
    lines += [f"# HELP {SCRAPE_UP} {SCRAPE_UP_HELP}", f"# TYPE {SCRAPE_UP} gauge"]
    lines += [render(Sample(SCRAPE_UP, (("instance", i),), 1.0 if up[i] else 0.0)) for i in sorted(up)]
    return "\n".join(lines) + "\n"


SCRAPE_UP = "blf_scrape_up"
SCRAPE_UP_HELP = "1 when blfctl got the instance's metrics, 0 when it did not answer in time."


def render(sample: Sample) -> str:
    labels = ",".join(f'{name}="{value}"' for name, value in sample.labels)
    return f"{sample.name}{{{labels}}} {format_value(sample.value)}" if labels else (
        f"{sample.name} {format_value(sample.value)}"
    )


def format_value(value: float) -> str:
    """Integers without a fraction (counters, bucket counts), others as Python prints them."""
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def as_json(by_instance: Mapping[str, Sequence[Sample]], errors: Mapping[str, str | None]) -> dict[str, object]:
    """The `--json` form: each instance asked (`up`, `error`) and every sample."""
    samples = [
        {"name": s.name, "labels": dict(s.labels), "value": s.value}
        for instance in sorted(by_instance)
        for s in with_instance(by_instance[instance], instance)
    ]
    return {
        "instances": {name: {"up": error is None, "error": error} for name, error in sorted(errors.items())},
        "samples": samples,
    }
