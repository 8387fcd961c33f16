"""The shared benchmark helpers measure what they claim, and the runner finds benchmarks."""

from __future__ import annotations

import pytest

from bench.__main__ import available
from bench.__main__ import main as run_benchmarks
from bench.baselines import bare_echo_baseline, bare_upload_baseline, percentile


async def test_echo_baseline_counts_every_call() -> None:
    result = await bare_echo_baseline(calls=60, concurrency=4)
    assert result.calls == 60
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.calls_per_second > 0


async def test_upload_baseline_streams_every_byte() -> None:
    # A size that is not a multiple of the chunk: the last chunk is short.
    result = await bare_upload_baseline(total_bytes=1_000_000, chunk_size=64 * 1024)
    assert result.bytes == 1_000_000
    assert result.mb_per_second > 0


def test_percentile_picks_from_sorted_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 0.5) in (50.0, 51.0)
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0


def test_runner_lists_and_rejects(capsys: pytest.CaptureFixture[str]) -> None:
    assert "rpc_baseline" in available()
    assert run_benchmarks(["no_such_benchmark"]) == 2
    assert "unknown benchmark(s): no_such_benchmark" in capsys.readouterr().out


def test_runner_passes_arguments_after_double_dash(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["rpc_baseline", "--", "--calls", "20", "--concurrency", "2", "--mib", "1"]
    assert run_benchmarks(args) == 0
    out = capsys.readouterr().out
    assert "20 calls, concurrency 2" in out
    assert "x of the bare grpc.aio baseline" in out


def test_runner_leaves_the_access_log_level_alone() -> None:
    import logging

    access = logging.getLogger("mediagrid.access")
    before = access.level
    run_benchmarks(["rpc_baseline", "--", "--calls", "4", "--concurrency", "1", "--mib", "1"])
    assert access.level == before
