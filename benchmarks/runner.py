"""The one benchmark runner: a readable table, and with ``--json`` one JSON object last."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocols.cli import add_version

BENCHMARKS = {
    "edge_ingest": "benchmarks.edge_ingest",
    "allocate": "benchmarks.allocate",
    "reroute": "benchmarks.reroute",
    "reroute_under_reads": "benchmarks.reroute_under_reads",
    "e2e": "benchmarks.e2e",
    "cockpit": "benchmarks.cockpit",
    "scale": "benchmarks.scale",
    "returns": "benchmarks.returns",
    "returns_cv": "benchmarks.returns_cv",
    "returns_fresh": "benchmarks.returns_fresh",
    "import": "benchmarks.imports",
    "auth": "benchmarks.auth",
    "inquiries": "benchmarks.inquiries",
}


@dataclass
class Result:
    """Figures of one benchmark run: name -> value, with a unit and a note per figure."""

    name: str
    figures: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    # structured output beside the figures (e.g. a confusion table), under "details"
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, value: float, unit: str = "", note: str = "", target: str = "") -> None:
        self.figures[key] = value
        self.units[key] = unit
        if note:
            self.notes[key] = note
        if target:
            self.targets[key] = target


def _table(result: Result, seconds: float) -> str:
    rows = [("figure", "value", "unit", "target", "note")]
    for key, value in result.figures.items():
        small = isinstance(value, float) and abs(value) < 100
        shown = f"{value:,.3f}" if small else f"{value:,.0f}"
        rows.append(
            (key, shown, result.units.get(key, ""), result.targets.get(key, ""),
             result.notes.get(key, ""))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"benchmark {result.name} ({seconds:.1f} s)"]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    add_version(parser)
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--quick", action="store_true", help="smaller run (used by tests)")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite",
                        help="backend (postgresql: a private server from the installed "
                             "binaries, SQLite measured in the same run as the baseline)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(BENCHMARKS[args.name])
    run: Callable[..., Result] = module.run
    started = time.perf_counter()
    if "db" in inspect.signature(run).parameters:
        result = run(args.quick, db=args.db)
    elif args.db != "sqlite":
        parser.error(f"benchmark {args.name} runs on SQLite only")
    else:
        result = run(args.quick)
    elapsed = time.perf_counter() - started
    print(_table(result, elapsed), flush=True)
    for key, value in result.details.items():
        print(f"{key}: {json.dumps(value, ensure_ascii=False)}", flush=True)
    if args.json:
        payload: dict[str, Any] = {k: round(v, 4) for k, v in result.figures.items()}
        if result.details:
            payload["details"] = result.details
        print(json.dumps({"benchmark": result.name, **payload}, ensure_ascii=False),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
