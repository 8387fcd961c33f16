"""Benchmark: the cost of the database path (``common.db.SuitePool``) per statement.

The baseline is the bare asyncpg pool (``pool.fetchval``) on the same pool, measured in the
same run, alternating with the suite's path (breaker, time bound, retry-once bookkeeping),
so that load on the machine hits both alike. One caller, ``SELECT 1``, against the
PostgreSQL at 127.0.0.1:5432. The report gives wall time and client CPU per statement
(minimum and median over rounds) and the difference.

    python bench/bench_db_path.py [--calls 1000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT), str(ROOT / "gen")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from bench.rounds import Ratios, quick  # noqa: E402
from common import db  # noqa: E402
from common.settings import Settings  # noqa: E402

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

Statement = Callable[[str], Awaitable[object]]


async def _round(statement: Statement, calls: int) -> tuple[float, float]:
    """(wall, CPU) microseconds per statement."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await statement("SELECT 1")
    return (
        (time.perf_counter() - wall) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


async def run(calls: int, rounds: int) -> None:
    settings = Settings(environment="test", service_name="bench-db-path")
    raw = await db.create_pool(settings, LOCAL_PG)
    suite = db.SuitePool(raw, settings)

    async def through_suite(query: str) -> object:
        return await suite.fetchval(query, idempotent=True)

    results: dict[str, list[tuple[float, float]]] = {"asyncpg pool (baseline)": [], "SuitePool": []}
    try:
        await _round(raw.fetchval, calls)  # warm up both paths
        await _round(through_suite, calls)
        for _ in range(rounds):
            results["asyncpg pool (baseline)"].append(await _round(raw.fetchval, calls))
            results["SuitePool"].append(await _round(through_suite, calls))
    finally:
        await raw.close()
    summary: dict[str, tuple[float, float, float, float]] = {}
    for name, samples in results.items():
        walls, cpus = [s[0] for s in samples], [s[1] for s in samples]
        summary[name] = (min(walls), statistics.median(walls), min(cpus), statistics.median(cpus))
        print(
            f"{name:24s} wall min {summary[name][0]:6.0f} us  median {summary[name][1]:6.0f} us"
            f"   CPU min {summary[name][2]:6.0f} us  median {summary[name][3]:6.0f} us"
        )
    ratios = Ratios("SuitePool / asyncpg pool, wall per statement", lower_is_better=True, unit="us")
    for (path_wall, _), (base_wall, _) in zip(
        results["SuitePool"], results["asyncpg pool (baseline)"], strict=True
    ):
        print(ratios.add(path_wall, base_wall))
    print(ratios.summary())
    base, path = summary["asyncpg pool (baseline)"], summary["SuitePool"]
    print(
        f"SuitePool - baseline: wall {path[0] - base[0]:+.0f} us (min), "
        f"CPU {path[2] - base[2]:+.0f} us (min) per statement"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=quick(1000, 500))
    parser.add_argument("--rounds", type=int, default=quick(10, 5))
    args = parser.parse_args(argv)
    asyncio.run(run(args.calls, args.rounds))


if __name__ == "__main__":
    main(sys.argv[1:])
