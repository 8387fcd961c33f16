"""Garbage-collector settings for the long-running processes (`mediagrid serve`, workers).

CPython runs a generation-0 collection every 700 net allocations. The jobs service builds
thousands of small objects per claim or acknowledgement batch (rows, models, messages), so
collections ran every few jobs and each older-generation pass walked every object created
at start-up (modules, descriptors, generated protobuf classes). Freezing the start-up
objects (they live as long as the process) and raising the generation-0 threshold spares
those walks (the figure is in docs/benchmarks.md). Memory is still freed by reference
counting; only cyclic garbage waits longer for its collection.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("mediagrid.gc")


def tune(gen0_threshold: int) -> None:
    """Freeze what exists now and raise the generation-0 threshold (0 changes nothing).

    Call it once the process has started (imports done, services built), from a process
    entry point: never from code that tests run many times in one interpreter.
    """
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
    log.debug(
        "gc: %d start-up objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold()
    )
