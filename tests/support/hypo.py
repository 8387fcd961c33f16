"""Hypothesis settings for a shared, loaded 2-core machine.

Generation and example timing depend on the neighbours' load, so the time-based health
checks and deadlines are off; every other health check stays on.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

SLOW_CHECKS = [HealthCheck.too_slow]


def relaxed(max_examples: int = 100, **kwargs: object) -> settings:
    """``@relaxed()`` instead of ``@settings(...)`` on property tests."""
    suppress = [*SLOW_CHECKS, *kwargs.pop("suppress_health_check", [])]  # type: ignore[misc]
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=suppress,
        **kwargs,  # type: ignore[arg-type]
    )
