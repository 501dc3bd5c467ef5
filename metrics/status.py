"""Traffic lights: a rate at or above a threshold crosses it."""

from __future__ import annotations

LEVELS = ("green", "amber", "red")


def traffic_light(rate: float | None, thresholds: tuple[float, float]) -> str | None:
    """`green`, `amber` or `red` for `rate` against `(amber, red)`; None when undefined."""
    if rate is None:
        return None
    amber, red = thresholds
    if rate >= red:
        return "red"
    if rate >= amber:
        return "amber"
    return "green"


def at_least(status: str | None, level: str) -> bool:
    """True when `status` is `level` or worse (`amber` < `red`)."""
    return status is not None and LEVELS.index(status) >= LEVELS.index(level)
