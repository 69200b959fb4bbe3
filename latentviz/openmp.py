"""OpenMP defaults for a shared machine, set before the threading runtime starts.

PyTorch's and scikit-learn's OpenMP threads spin while they wait for each other (libgomp's
default). On a machine that other work shares (a laptop with a browser open, a lab server,
several training runs), a spinning thread burns the time slice its partner needs: a
TreeVAE digits run took 17 s on a quiet 2-core machine and over 600 s beside five other
processes (issue 14); docs/PERFORMANCE.md has the bench's side-by-side figures.

Unless the user set them, :func:`apply_defaults` sets

- ``OMP_WAIT_POLICY=PASSIVE``: threads sleep while they wait;
- ``OMP_NUM_THREADS`` to the number of cores this process may run on
  (``os.sched_getaffinity``: a ``taskset`` or a container's cpuset, not the machine's
  count).

libgomp reads both once, when it is loaded (with torch), so ``latentviz/__init__.py``
calls this before it imports torch, and ``app.py`` imports latentviz before anything else.
If torch was imported first, the runtime has started with its own settings; then nothing
is changed (:data:`APPLIED` stays empty). Child processes (a DataLoader worker, torchrun's
workers, the bench's) inherit the environment.

:func:`flush_subnormals` is the other CPU default set at that point: the OpenMP workers
flush subnormal floats to zero from their start (threads inherit the floating-point mode
of the thread that creates them), and the main thread does only while it trains.
"""
from __future__ import annotations

import contextlib
import os
import sys

#: what :func:`apply_defaults` set ({} when the user's own settings, or an already
#: started runtime, were kept)
APPLIED: dict[str, str] = {}


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def apply_defaults(environ=os.environ) -> dict[str, str]:
    """Set the shared-machine defaults for the variables the user left unset; returns
    what was set. Does nothing once torch is imported (its OpenMP runtime has read the
    environment already)."""
    if "torch" in sys.modules:
        return {}
    defaults = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(usable_cores())}
    for name, value in defaults.items():
        if name not in environ:
            environ[name] = value
            APPLIED[name] = value
    return dict(APPLIED)



def flush_subnormals() -> bool:
    """Flush subnormal floats (|x| < 1.2e-38 in float32) to zero in CPU arithmetic on
    PyTorch's OpenMP workers, from their start, and leave this thread as it was; returns
    whether the CPU can (x86 with SSE3: ``torch.set_flush_denormal``, the FTZ and DAZ bits).

    x86 CPUs take a slow microcode path for every operation on a subnormal number, and a
    well-trained TreeVAE makes them in every step: its routers grow so sure that most
    images reach most leaves with P(leaf|x) < 1e-30 (5-leaf MNIST tree of the reference
    run, after 620 epochs: 135-193 of 256 images per leaf), and the backward pass through
    each leaf's decoder scales its gradients by that probability (26,006 subnormal
    parameter gradients in one step; Adam then writes subnormal weights). That step took
    236 ms on one thread; flushed, 104 ms, and the same with its subnormal weights zeroed
    first (docs/PERFORMANCE.md). Numbers that small change no sum they take part in; GPUs
    handle them at full speed.

    The mode belongs to a thread, and a new thread copies its creator's. So this sets it,
    starts the workers with one parallel operation (they copy it), and turns it off again
    here: the importing thread keeps IEEE arithmetic, Python's own floats included
    (libraries such as Hypothesis refuse to run without subnormals), and turns flushing on
    only while it trains (:func:`flushing`, used by :func:`latentviz.train.fit`). Workers
    started earlier (torch used before latentviz was imported) keep PyTorch's default.
    """
    import torch

    if not torch.set_flush_denormal(True):
        return False
    try:
        torch.zeros(1 << 20).add_(1.0)  # a parallel region: every worker starts now
    finally:
        torch.set_flush_denormal(False)
    return True


def flushing_now() -> bool:
    """Whether this thread flushes subnormals (half the smallest normal double is 0)."""
    return sys.float_info.min / 2 == 0.0


@contextlib.contextmanager
def flushing():
    """Flush subnormals to zero on this thread inside the block (training), then restore
    the mode it had; the workers flush from their start (:func:`flush_subnormals`)."""
    import torch

    before = flushing_now()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
