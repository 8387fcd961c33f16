"""Bare grpc.aio baselines on this machine, and what the suite's interceptor chain costs.

Prints: unary echo calls/s and p50/p99 at a concurrency, the same through the suite's
``SuiteInterceptor`` (request id, access log, error mapping; no authentication) with the
ratio, and client-streaming upload MB/s at 1 MiB and 64 KiB chunks. Service benchmarks
(users, files) compare against the same baselines through ``bench.baselines``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from bench.baselines import (
    bare_echo_baseline,
    bare_server,
    bare_upload_baseline,
    echo_load,
    ratio_line,
)
from bench.rounds import Ratios, quick
from common.interceptors import SuiteInterceptor


async def run(args: argparse.Namespace) -> None:
    print(
        f"unary echo, 64-byte payload, {args.calls} calls, concurrency {args.concurrency}, "
        f"{args.rounds} alternating rounds (the machine's load phases fall on both alike)"
    )
    ratios = Ratios("SuiteInterceptor / bare grpc.aio, calls/s")
    for round_ in range(1, args.rounds + 1):
        bare = await bare_echo_baseline(calls=args.calls, concurrency=args.concurrency)
        async with bare_server([SuiteInterceptor()]) as address:
            suite = await echo_load(address, calls=args.calls, concurrency=args.concurrency)
        print(f"round {round_}")
        print(bare.line("  bare grpc.aio (baseline)"))
        print(suite.line("  with SuiteInterceptor"))
        print(ratios.add(suite.calls_per_second, bare.calls_per_second))
    print(ratios.summary())

    total = args.mib * 2**20
    print(f"\nclient-streaming upload of {args.mib} MiB to a byte-counting server")
    big = await bare_upload_baseline(total_bytes=total, chunk_size=2**20)
    print(big.line("bare grpc.aio, 1 MiB chunks"))
    small = await bare_upload_baseline(total_bytes=total, chunk_size=64 * 1024)
    print(small.line("bare grpc.aio, 64 KiB chunks"))
    print(ratio_line("64 KiB vs 1 MiB chunks", small.mb_per_second, big.mb_per_second))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench rpc_baseline", description=__doc__)
    parser.add_argument("--calls", type=int, default=quick(5000, 2000))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=quick(5, 3))
    parser.add_argument("--mib", type=int, default=quick(256, 64))
    # The access log would otherwise write one line per call to the terminal.
    access = logging.getLogger("mediagrid.access")
    level = access.level
    access.setLevel(logging.WARNING)
    try:
        asyncio.run(run(parser.parse_args(argv)))
    finally:
        access.setLevel(level)
