"""bench/rounds.py: per-round ratios, their median and the target's verdict; quick mode."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.rounds import Ratios, is_quick, quick, set_quick

positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False)


@given(st.lists(st.tuples(positive, positive), min_size=1, max_size=9))
def test_the_median_is_the_middle_round_and_every_round_is_printed(
    rounds: list[tuple[float, float]],
) -> None:
    ratios = Ratios("x / y", target=1.0, every_round=True)
    lines = [ratios.add(ours, base) for ours, base in rounds]
    assert [line.split("round ")[1].split(":")[0] for line in lines] == [
        str(i + 1) for i in range(len(rounds))
    ]
    values = sorted(ours / base for ours, base in rounds)
    middle = len(values) // 2
    expected = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
    assert ratios.median == pytest.approx(expected)
    assert ratios.met() == (values[0] >= 1.0)
    summary = ratios.summary()
    assert summary.count("x, ") == len(rounds) - 1
    assert summary.endswith("OK" if values[0] >= 1.0 else "MISSED")


def test_a_cost_target_is_an_upper_bound_on_the_median() -> None:
    cpu = Ratios("cpu", target=1.0, lower_is_better=True)
    for ours, base in ((90.0, 100.0), (120.0, 100.0), (95.0, 100.0)):
        cpu.add(ours, base)
    assert cpu.median == pytest.approx(0.95)
    assert cpu.met() is True
    assert "target median <= 1x: OK" in cpu.summary()
    assert Ratios("none").met() is None


def test_quick_picks_the_small_default_only_in_quick_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BENCH_QUICK", raising=False)
    assert not is_quick() and quick(20_000, 3000) == 20_000
    set_quick()
    assert is_quick() and quick(20_000, 3000) == 3000
    set_quick(False)
    assert quick(5, 3) == 5
