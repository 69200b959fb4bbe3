"""Data-parallel training under ``torchrun``: PyTorch's DistributedDataParallel, nothing
home-made.

``torchrun --nproc-per-node N -m latentviz train ...`` starts N processes and gives each
its rank in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...);
:func:`init_from_env` joins them into one process group (NCCL on GPUs, gloo on CPUs).
Every rank holds the whole dataset as resident tensors and draws the same seeded
permutation each epoch; :func:`my_share` splits every global batch of it into W equal,
disjoint slices, one per rank, so with the same global batch size one optimiser step sees
the images a single process would, and DDP's gradient all-reduce (a mean over ranks of
per-rank means) gives the mean over the global batch.

Without torchrun (or with one process) every function here is a no-op and nothing is
wrapped: the single-process trainer runs exactly as before.
"""
from __future__ import annotations

import datetime
import logging
import os

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


def available() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def world_size() -> int:
    return torch.distributed.get_world_size() if available() else 1


def rank() -> int:
    return torch.distributed.get_rank() if available() else 0


def is_main() -> bool:
    """Rank 0 (or the only process): the one that prints and writes checkpoints."""
    return rank() == 0


def init_from_env(device: str = "auto") -> int:
    """Join the process group torchrun describes in the environment; the world size.

    Does nothing (and returns 1) when not started by torchrun with several processes.
    ``device`` is the run's ``TrainConfig.device``: NCCL when that resolves to CUDA (each
    process then uses the GPU of its ``LOCAL_RANK``), gloo otherwise.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1
    if available():
        return world_size()
    from .train import pick_device

    cuda = pick_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    log.info("rank %d of %d (%s)", rank(), world_size(), torch.distributed.get_backend())
    return world_size()


LEAVE_TIMEOUT = datetime.timedelta(hours=6)


def leave(finished: bool = True) -> None:
    """Leave the process group, if this process joined one (at the end of a command).

    A command that finished on this rank first waits at a barrier for the others: after
    training, rank 0 alone evaluates and writes while the others have nothing left to do,
    and a rank that tore down its group and exited while rank 0 still held its gloo
    connections died in the teardown ("terminate called without an active exception",
    SIGABRT), so torchrun reported a run that had saved its checkpoint as failed (2 of 12
    two-process runs on the loaded 2-core build machine; 0 of 24 with the barrier). The
    barrier waits up to ``LEAVE_TIMEOUT`` (gloo's ``monitored_barrier``; NCCL's barrier
    waits for the group's own timeout). After a failure there is no barrier (the others
    may never reach it): torchrun stops the other ranks when one exits with an error."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if finished and world_size() > 1:
        if torch.distributed.get_backend() == "gloo":
            torch.distributed.monitored_barrier(timeout=LEAVE_TIMEOUT)
        else:
            torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def refuse_schedule(model) -> None:
    """TreeVAE grows its tree one split at a time from whole-dataset decisions (which leaf
    to split, what to prune), a sequential schedule that is not data-parallel; refuse it
    under torchrun rather than train something other than the single-process run."""
    if getattr(model, "fit_schedule", None) is not None and world_size() > 1:
        from .models import ConfigError
        raise ConfigError("variant", getattr(model, "variant_name", None) or type(model).__name__,
                          "a variant without a growth schedule under torchrun: TreeVAE's "
                          "growth is sequential, so it trains in one process (run it "
                          "without torchrun)")


def check_batch(batch_size: int) -> None:
    """Every rank gets the same share of a global batch (so the mean of their gradients
    is the global batch's)."""
    w = world_size()
    if batch_size % w:
        from .models import ConfigError
        raise ConfigError("batch_size", batch_size, f"a multiple of the {w} processes: the "
                          "global batch is split evenly between them")


def my_share(perm: Tensor, batch_size: int, steps: int) -> Tensor:
    """This rank's slice of every global batch of ``perm``, laid end to end: step s reads
    rows [s * b, (s + 1) * b) of the result, b = batch_size / W, which are the b rows of
    global batch s (perm[s * batch_size:(s + 1) * batch_size]) that belong to this rank."""
    w = world_size()
    if w == 1:
        return perm
    b = batch_size // w
    return perm[:steps * batch_size].view(steps, w, b)[:, rank()].reshape(-1)


def mean(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """The mean over ranks of each (scalar) term, in one all-reduce; ``terms`` as is in a
    single process."""
    w = world_size()
    if w == 1 or not terms:
        return terms
    keys = list(terms)  # every rank builds its terms in the same order (the same code)
    v = torch.stack([torch.as_tensor(terms[k], dtype=torch.float32) for k in keys])
    torch.distributed.all_reduce(v)
    return dict(zip(keys, v / w))


def any_rank(flag: bool, device) -> bool:
    """True on every rank if it is True on any (e.g. rank 0's user pressed stop)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)


def shard_rows(x: Tensor) -> Tensor:
    """This rank's contiguous share of the rows of ``x`` (sizes differ by at most one)."""
    w = world_size()
    return x if w == 1 else x.tensor_split(w)[rank()]


def gather_rows(x: Tensor, n: int) -> Tensor:
    """Inverse of :func:`shard_rows`: every rank's share of an ``n``-row tensor, in rank
    order, on every rank."""
    w = world_size()
    if w == 1:
        return x
    sizes = [n // w + (i < n % w) for i in range(w)]  # as tensor_split cuts them
    padded = x.new_zeros((max(sizes), *x.shape[1:]))  # all_gather wants equal shapes
    padded[:len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(w)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([p[:k] for p, k in zip(parts, sizes)])


def broadcast_(x: Tensor, src: int = 0) -> Tensor:
    """``x`` on every rank replaced by rank ``src``'s, in place."""
    if world_size() > 1:
        torch.distributed.broadcast(x, src)
    return x


class _Loss(nn.Module):
    """DDP wraps a module's ``forward``; the trainer's step is ``model.loss``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor):
        return self.model.loss(x, y)


def step_loss(model, device: torch.device):
    """What the trainer calls for one step's loss: ``model.loss`` in a single process, else
    the model under DistributedDataParallel (its constructor broadcasts rank 0's weights,
    and backward all-reduces the gradients)."""
    if world_size() == 1:
        return model.loss
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(_Loss(model), device_ids=ids)
