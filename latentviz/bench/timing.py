"""Timing helpers: wall and CPU seconds (:class:`Clock`), interleaved paired runs
(:func:`interleave`), rates and the median paired speed-up."""
from __future__ import annotations

import math
import os
import statistics
import time
from typing import Callable

import torch


def _cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (DataLoader workers, servers)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return time.process_time()
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Clock:
    """Wall and CPU seconds of a block; on CUDA the device is synchronised at both ends
    and ``gpu`` holds the CUDA-event time between them."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.wall = self.cpu = 0.0
        self.gpu: float | None = None

    def __enter__(self) -> "Clock":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._events = (torch.cuda.Event(enable_timing=True),
                            torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        self._c0, self._t0 = _cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self._events[1].record()
            self._events[1].synchronize()
            self.gpu = self._events[0].elapsed_time(self._events[1]) / 1000.0
        self.wall = time.perf_counter() - self._t0
        self.cpu = _cpu_seconds() - self._c0


def _load() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else None


def interleave(runners: dict[str, Callable[[], int | tuple]], repeats: int, device,
               errors: dict | None = None) -> dict[str, list]:
    """Run each runner ``repeats`` times, rotating the order every repeat so no runner is
    always first after a pause or last in a warm cache. A runner returns the number of
    items it processed, or (items, seconds, CPU seconds not to count) when it clocks
    itself; the result is {name: [(items, wall, cpu), ...]}, one per repeat. With
    ``errors``, a runner that raises is dropped and its error kept there by name."""
    names = list(runners)
    out: dict[str, list] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if errors is not None and name in errors:
                continue
            with Clock(device) as c:
                try:
                    items = runners[name]()
                except Exception as exc:  # noqa: BLE001 - e.g. a compile mode a GPU lacks
                    if errors is None:
                        raise
                    errors[name] = f"{type(exc).__name__}: {exc}"[:300]
                    continue
            items, wall, cpu_off = items if isinstance(items, tuple) else (items, c.wall, 0.0)
            out[name].append((items, wall, c.cpu - cpu_off))
    return out


def rate(samples: list) -> float | None:
    """Median items per wall second."""
    return _median([n / w for n, w, _ in samples if w > 0])


def paired_speedup(ours: list, ref: list) -> float | None:
    """Median over repeats of (our items/s) / (reference items/s)."""
    return _median([(a[0] / a[1]) / (b[0] / b[1]) for a, b in zip(ours, ref) if a[1] > 0 and b[1] > 0])
