"""Shared by every benchmark: per-round ratios against a baseline, their median, quick mode.

On a shared machine the load changes over seconds, so a benchmark measures ours and the
baseline in alternating rounds and compares within each round; the median of the rounds'
ratios is the figure, and every round's ratio is printed beside it so that the noise shows.

    from bench.rounds import Ratios, quick

    parser.add_argument("--rounds", type=int, default=quick(5, 3))
    parser.add_argument("--calls", type=int, default=quick(5000, 1000))
    ...
    drain = Ratios("drain / PGQueuer", target=1.2, every_round=True)
    for n in range(args.rounds):
        ours, theirs = measure_ours(), measure_baseline()
        print(drain.add(ours, theirs))  # "  drain / PGQueuer  round 2: 14,100 / 11,300 = 1.25x"
    print(drain.summary())              # "drain / PGQueuer  median 1.24x  rounds 1.22x ...  OK"

For costs (latency, CPU per job), where lower is better, pass ``lower_is_better=True``: the
ratio stays ours / baseline and the target is then an upper bound.

Quick mode (``make bench-quick``, ``python -m bench --quick`` or ``BENCH_QUICK=1``) runs the
same measurements at lower counts: ``quick(full, small)`` is the default to give argparse.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

QUICK_ENV = "BENCH_QUICK"


def is_quick() -> bool:
    """True in quick mode (the variable is inherited by a benchmark's subprocesses)."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def quick(full: T, small: T) -> T:
    """``small`` in quick mode, else ``full``: the default of a count or a duration."""
    return small if is_quick() else full


def set_quick(on: bool = True) -> None:
    if on:
        os.environ[QUICK_ENV] = "1"
    else:
        os.environ.pop(QUICK_ENV, None)


@dataclass
class Ratios:
    """Ours / baseline per round, printed per round and summarized as a median.

    ``target``: the ratio to reach (a lower bound, or an upper bound with
    ``lower_is_better``); ``every_round``: the target holds for each round, not only the
    median.
    """

    label: str
    target: float | None = None
    lower_is_better: bool = False
    every_round: bool = False
    unit: str = ""
    rounds: list[tuple[float, float]] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [ours / base if base else float("inf") for ours, base in self.rounds]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def add(self, ours: float, baseline: float) -> str:
        """Record one round; return its line to print."""
        self.rounds.append((ours, baseline))
        unit = f" {self.unit}" if self.unit else ""
        return (
            f"  {self.label}  round {len(self.rounds)}: {_num(ours)} / {_num(baseline)}{unit}"
            f" = {self.ratios[-1]:.2f}x"
        )

    def met(self) -> bool | None:
        """Whether the target holds (for the median, or for every round); None without one."""
        if self.target is None or not self.rounds:
            return None
        checked = self.ratios if self.every_round else [self.median]
        if self.lower_is_better:
            return all(r <= self.target for r in checked)
        return all(r >= self.target for r in checked)

    def summary(self) -> str:
        """One line: median, each round, the spread, and the target's verdict."""
        if not self.rounds:
            return f"{self.label}  no rounds"
        ratios = self.ratios
        listed = ", ".join(f"{r:.2f}x" for r in ratios)
        line = (
            f"{self.label}  median {self.median:.2f}x  rounds {listed}"
            f"  (spread {min(ratios):.2f}-{max(ratios):.2f})"
        )
        if self.target is not None:
            sign = "<=" if self.lower_is_better else ">="
            scope = "every round" if self.every_round else "median"
            line += f"  target {scope} {sign} {self.target:g}x: {'OK' if self.met() else 'MISSED'}"
        return line


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
