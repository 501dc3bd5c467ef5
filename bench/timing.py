"""Wall and CPU clocks for the benchmark stages."""

from __future__ import annotations

import time
from contextlib import contextmanager


def clock() -> tuple[float, float]:
    """(wall, process CPU) now; CPU counts every thread of the process."""
    return time.perf_counter(), time.process_time()


def lap(t0: tuple[float, float]) -> dict[str, float]:
    """``{"seconds": wall, "cpu": cpu}`` since ``t0`` (in this order)."""
    return {"seconds": time.perf_counter() - t0[0], "cpu": time.process_time() - t0[1]}


class Timer:
    """Named sub-timings of one stage, wall seconds."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t0
