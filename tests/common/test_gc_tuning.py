"""gc tuning runs in a child interpreter: freezing objects is process-wide and permanent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import gc, sys
from common import gc_tuning
before = gc.get_threshold()
gc_tuning.tune(int(sys.argv[1]))
print(before[0], gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:], gc.get_freeze_count())
"""


def _probe(threshold: int) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(threshold)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


def test_tune_freezes_start_up_objects_and_raises_generation_zero() -> None:
    before, after, others_kept, frozen = _probe(20_000)
    assert (before, after, others_kept) == ("700", "20000", "True")
    assert int(frozen) > 1000  # the imported modules' objects, at least


def test_zero_leaves_the_collector_alone() -> None:
    assert _probe(0) == ["700", "700", "True", "0"]
