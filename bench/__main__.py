"""Run every ``bench/bench_*.py`` module's ``main(argv)``, or only those named.

``python -m bench``                      all benchmarks, default arguments
``python -m bench rpc_baseline``         one benchmark (``bench_`` prefix optional)
``python -m bench rpc_baseline -- --calls 500``   arguments after ``--`` go to each main
``python -m bench --quick``              every benchmark at lower counts (``make bench-quick``)
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from bench.rounds import is_quick, set_quick

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(path.stem.removeprefix("bench_") for path in HERE.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    split = argv.index("--") if "--" in argv else len(argv)
    names, passthrough = argv[:split], argv[split + 1 :]
    if "--quick" in names:
        names = [name for name in names if name != "--quick"]
        set_quick()
    wanted = [name.removeprefix("bench_") for name in names] or available()
    unknown = sorted(set(wanted) - set(available()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(available())}")
        return 2
    for name in wanted:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== bench_{name}{' (quick)' if is_quick() else ''} ==", flush=True)
        started = time.perf_counter()
        module.main(list(passthrough))
        print(f"== bench_{name} done in {time.perf_counter() - started:.1f}s ==\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
