"""Benchmarks: ``python -m latentviz bench [--quick] [--only SECTIONS] [--out FILE.json]``.

Every figure is measured side by side with its reference in one run: the runners are
interleaved (rotated order per repeat), the ratio is taken per repeat and the median is
reported, so a machine that is shared with other work shifts both numbers and the ratio
stays meaningful. Wall seconds are what the targets speak of; CPU seconds (this process
and its reaped children) are kept in the JSON as a load-independent cross-check.

Sections (``--only`` takes a comma-separated subset):

- ``train``: :func:`latentviz.train.fit` against the loop of pytorch/examples' VAE
  (torchvision MNIST through ``DataLoader(batch_size=128, shuffle=True, num_workers=1)``
  with ``ToTensor``, ``loss.item()`` every step), same model and Adam, MLP and conv
  backbones; then our trainer at larger batches, with the test recon after a fixed number
  of epochs per batch size so "where quality holds" is measured. On CUDA the same code
  adds bf16 autocast, ``torch.compile`` and fused Adam, and times with CUDA events.
- ``shared``: a short training run (digits) in a fresh process, alone and beside a
  process spinning one core, under the old OpenMP defaults (torch first: threads spin
  while they wait) and latentviz's (passive, the usable cores); the ratios.
- ``treevae``: on a GPU, the wall time of the full MNIST growth schedule; on the CPU an
  estimate from measured seconds per epoch of the tree at its initial and final size.
- ``projections``: :mod:`latentviz.projections` on 10,000 test latents (PCA, openTSNE's
  FFT t-SNE against scikit-learn's Barnes-Hut, UMAP warm and cold in fresh processes),
  and 70,000 points with the progress callback.
- ``data``: loading your own images: a generated folder of 60,000 PNGs (MNIST's training
  images written out, 10 class folders) and the same as ``.npz``, beside MNIST's own load
  from its IDX files (the latentviz cache bypassed).
- ``app``: ``streamlit run app.py`` to the first rendered latent plot in headless
  Chromium (cold server, then cached), and the server time of one sampling-slider
  interaction read from the websocket; AppTest (no browser) with ``--quick``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("train", "shared", "treevae", "projections", "data", "app")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
H100_TARGETS = {"mlp": 0.1, "conv": 0.5}  # seconds per 60k-image MNIST epoch on an H100
QUALITY_TOLERANCE = 0.01  # a batch size "holds quality" within 1% of batch 128's test recon


# ----------------------------------------------------------------------------- results

@dataclass
class Row:
    """One printed figure: ours beside the reference, the speed-up and the target."""

    what: str
    ours: float | None = None
    reference: float | None = None
    unit: str = "s"
    ratio: float | None = None      # speed-up of ours over the reference (> 1: ours faster)
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


class Report:
    """Prints rows as they are measured (one table per section) and keeps them for JSON."""

    WIDTHS = (50, 15, 15, 7, 16, 5)

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.sections: dict[str, dict] = {}
        self.current: dict | None = None

    def _print(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def section(self, name: str, title: str) -> None:
        self.current = self.sections.setdefault(name, {"title": title, "rows": [],
                                                       "skipped": [], "notes": []})
        self._print()
        self._print(f"== {name}: {title}")
        w = self.WIDTHS
        self._print(f"{'what':<{w[0]}} {'ours':>{w[1]}} {'reference':>{w[2]}} {'ratio':>{w[3]}} "
                    f"{'target':<{w[4]}} {'met?':<{w[5]}} note")

    def row(self, row: Row) -> Row:
        self.current["rows"].append(row)
        w = self.WIDTHS
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        self._print(f"{_clip(row.what, w[0]):<{w[0]}} {fmt(row.ours, row.unit):>{w[1]}} "
                    f"{fmt(row.reference, row.unit):>{w[2]}} {ratio:>{w[3]}} "
                    f"{row.target:<{w[4]}} {met:<{w[5]}} {row.note}".rstrip())
        return row

    def skip(self, what: str, reason: str) -> None:
        self.current["skipped"].append({"what": what, "reason": reason})
        self._print(f"  skipped: {what}: {reason}")

    def note(self, text: str) -> None:
        self.current["notes"].append(text)
        for i, line in enumerate(textwrap.wrap(text, 100)):
            self._print(("  note: " if i == 0 else "        ") + line)

    def to_dict(self) -> dict:
        return {name: {**s, "rows": [dataclasses.asdict(r) for r in s["rows"]]}
                for name, s in self.sections.items()}


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "~"


def fmt(value: float | None, unit: str) -> str:
    """A figure with its unit, readable at a glance: 41,200 img/s, 3.2 s, 85 ms."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "s":
        if value < 1.0:
            return f"{value * 1000:.0f} ms"
        return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"
    if unit == "img/s":
        return f"{value:,.0f} img/s"
    if unit == "h":
        return f"{value:.1f} h"
    if unit:
        return f"{value:.4g} {unit}"
    return f"{value:.4g}"


# ----------------------------------------------------------------------------- timing

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


# ----------------------------------------------------------------------------- environment

def environment(args) -> dict:
    from importlib import metadata

    from . import openmp
    from .train import describe_device, pick_device

    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    device = pick_device("auto")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        cores = os.cpu_count()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "python -m latentviz " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(
            ("__main__.py", "latentviz")) else " ".join(sys.argv),
        "device": describe_device(device), "cpu": cpu, "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp spins)") + (
            " (latentviz's default)" if "OMP_WAIT_POLICY" in openmp.APPLIED else ""),
        "load_average": _load(),
        "python": platform.python_version(), "commit": commit,
        "versions": {p: version(p) for p in ("torch", "torchvision", "numpy", "scikit-learn",
                                             "umap-learn", "pynndescent", "numba", "openTSNE",
                                             "streamlit", "playwright")},
        "quick": bool(args.quick),
    }


def _load_mnist(data_dir):
    """(latentviz Dataset, torchvision train set with ToTensor) or raise with the reason."""
    from torchvision import datasets, transforms

    from .data import load_dataset

    data = load_dataset("mnist", data_dir, download=False)
    root = Path(data_dir).expanduser() if data_dir else None
    if root is None:
        from .data import default_data_dir
        root = default_data_dir()
    tv = datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    return data, tv


def _slice(data, n_train: int, n_test: int):
    """The first n_train / n_test images (the reference reads the same ones)."""
    return dataclasses.replace(data, x_train=data.x_train[:n_train], y_train=data.y_train[:n_train],
                               x_test=data.x_test[:n_test], y_test=data.y_test[:n_test])


# ----------------------------------------------------------------------------- 1. training

def _vae(backbone: str, device, seed: int = 0):
    from .models import build

    torch.manual_seed(seed)
    return build("vae", backbone=backbone, image_shape=(1, 28, 28), n_classes=10).to(device)


def _adam(model, lr=1e-3):
    """The reference loop's optimiser: Adam as pytorch/examples builds it."""
    return torch.optim.Adam(model.parameters(), lr=lr)


class ReferenceLoop:
    """pytorch/examples vae/main.py's ``train(epoch)``: the torchvision dataset through a
    DataLoader (batch 128, shuffled, one worker, ToTensor; pinned memory on CUDA), one
    ``loss.item()`` per step; the same model and Adam as ours."""

    def __init__(self, backbone, tv_dataset, n: int, device, batch_size: int = 128):
        from torch.utils.data import DataLoader, Subset

        self.device = device
        self.model = _vae(backbone, device)
        self.opt = _adam(self.model)
        ds = tv_dataset if n >= len(tv_dataset) else Subset(tv_dataset, range(n))
        self.loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=1,
                                 pin_memory=device.type == "cuda")
        warm = DataLoader(Subset(tv_dataset, range(2 * batch_size)), batch_size=batch_size,
                          num_workers=0)
        self._epoch(warm)

    def _epoch(self, loader) -> int:
        self.model.train()
        train_loss, seen = 0.0, 0
        for data, target in loader:
            data = data.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            self.opt.zero_grad()
            out = self.model.loss(data, target)
            out.total.backward()
            train_loss += out.total.item()
            self.opt.step()
            seen += len(data)
        return seen

    def __call__(self) -> int:
        return self._epoch(self.loader)


class OursLoop:
    """One epoch of :func:`latentviz.train.fit` over device-resident data, timed by fit's
    own epoch clock (``History.seconds``: shuffled index batches, per-epoch checks and the
    test evaluation; on CUDA the epoch ends on a host read, so it is synchronised). Not
    timed: fit's one-off loss evaluation before the first epoch of a run."""

    def __init__(self, backbone, data, device, batch_size: int, amp: bool = False,
                 compile: str | None = None):
        from .train import TrainConfig, adam, evaluate, fit

        self.fit = fit
        self.model = _vae(backbone, device)
        if compile:
            # An instance attribute shadows the method: fit() and evaluate() call the
            # compiled loss without knowing. "reduce-overhead" adds CUDA graphs.
            self.model.loss = torch.compile(self.model.loss, mode=compile)
        # The library's own optimiser (fused Adam); the reference keeps the usual one.
        self.opt = adam(self.model.parameters(), TrainConfig())
        self.data = data.to(device)
        self.batch_size = min(batch_size, len(data.x_train))
        self.config = TrainConfig(epochs=1, batch_size=batch_size, device=device.type, amp=amp)
        self.epoch = 0
        warm = _slice(self.data, 3 * self.batch_size, min(len(data.x_test), 2 * self.batch_size))
        fit(self.model, warm, self.config, optimizer=self.opt)  # compile, caches, allocator
        # CPU of fit's one-off start evaluation, taken off each epoch's CPU seconds.
        x, y = self.data.x_train[:2048], self.data.y_train[:2048]
        with Clock(device) as c:
            evaluate(self.model, x, y, self.config.eval_batch_size, 0)
        self.start_cpu = c.cpu

    def __call__(self) -> tuple[int, float, float]:
        self.epoch += 1
        hist = self.fit(self.model, self.data, self.config.replace(seed=self.epoch),
                        optimizer=self.opt, start_epoch=self.epoch, prepare=False)
        return ((len(self.data.x_train) // self.batch_size) * self.batch_size, sum(hist.seconds),
                self.start_cpu)


def _quality(backbone, data, device, batch_size, epochs, amp=False) -> tuple[float, float]:
    """(test recon after ``epochs``, seconds) training a fresh model with lr scaled by
    sqrt(batch / 128), the usual rule for Adam."""
    from .train import TrainConfig, TrainingDiverged, fit

    model = _vae(backbone, device)
    lr = 1e-3 * math.sqrt(batch_size / 128)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, device=device.type, amp=amp)
    with Clock(device) as c:
        try:
            hist = fit(model, data.to(device), cfg)
        except TrainingDiverged:
            return math.inf, c.wall
    return hist.test[-1]["recon"], c.wall


def bench_train(rep: Report, ctx: dict) -> None:
    rep.section("train", "training throughput: our trainer vs the pytorch/examples loop")
    from .train import pick_device

    device = pick_device("auto")
    quick, cuda = ctx["quick"], device.type == "cuda"
    try:
        data, tv = _load_mnist(ctx["data_dir"])
    except Exception as exc:  # noqa: BLE001 - any reason the dataset is missing
        rep.skip("training throughput", f"MNIST not available ({type(exc).__name__}: {exc})"[:300])
        return
    if quick:
        sizes, repeats, q_epochs, q_data = {"mlp": 512, "conv": 256}, 1, {"mlp": 1, "conv": 1}, \
            _slice(data, 1024, 256)
    elif cuda:
        sizes, repeats, q_epochs, q_data = {"mlp": 60000, "conv": 60000}, 3, \
            {"mlp": 10, "conv": 5}, data
    else:
        sizes, repeats, q_epochs, q_data = {"mlp": 8000, "conv": 3000}, 5, \
            {"mlp": 10, "conv": 2}, data
    batches = [512] if quick else [256, 512] if not cuda else [512, 2048]
    rep.note(f"device {ctx['env']['device']}, {ctx['env']['torch_threads']} torch threads; "
             f"each runner trains the first N MNIST images once per repeat, {repeats} repeats "
             "interleaved; ours is one fit() epoch incl. its per-epoch checks and a test "
             "evaluation on N/6 test images, the reference trains only")
    for backbone in ("mlp", "conv"):
        n = sizes[backbone]
        d = _slice(data, n, max(n // 6, 64))
        runners: dict[str, Callable[[], int]] = {}
        runners["reference"] = ReferenceLoop(backbone, tv, n, device)
        runners["ours-128"] = OursLoop(backbone, d, device, 128)
        for bs in batches:
            runners[f"ours-{bs}"] = OursLoop(backbone, d, device, bs)
        if cuda:  # name: ours-<batch>-<settings>
            gpu = {"ours-2048-bf16": (2048, None), "ours-2048-bf16-compiled": (2048, "default"),
                   "ours-128-bf16-cudagraphs": (128, "reduce-overhead"),
                   "ours-512-bf16-cudagraphs": (512, "reduce-overhead")}
            for name, (bs, mode) in gpu.items():
                try:
                    runners[name] = OursLoop(backbone, d, device, bs, amp=True, compile=mode)
                except Exception as exc:  # noqa: BLE001 - compile support varies by platform
                    rep.skip(f"{backbone}: {name}", f"{type(exc).__name__}: {exc}"[:300])
        errors: dict[str, str] = {}
        res = interleave(runners, repeats, device, errors)
        for name, err in errors.items():
            rep.skip(f"{backbone}: {name}", err)
        res = {k: v for k, v in res.items() if v}
        ref = res["reference"]
        ref_rate = rate(ref)
        like = paired_speedup(res["ours-128"], ref)
        rep.row(Row(f"{backbone}: ours vs reference, both batch 128", rate(res["ours-128"]),
                    ref_rate, "img/s", like, ">= 1.3x (CPU)" if not cuda else ">= 20x (H100)",
                    _met(like, 1.3 if not cuda else 20.0),
                    f"N={n}", {"samples": {k: v for k, v in res.items()}}))
        cpu_img = {k: _median([c / n for n, _, c in v]) for k, v in res.items()}
        rep.row(Row(f"{backbone}: CPU seconds per 1k images, batch 128", 1000 * cpu_img["ours-128"],
                    1000 * cpu_img["reference"], "s", _median(
                        [(b[2] / b[0]) / (a[2] / a[0]) for a, b in zip(res["ours-128"], ref)]),
                    "", None, "load-free view: both processes' CPU, the loader worker's too"))
        for name in res:
            if name in ("reference", "ours-128"):
                continue
            sp = paired_speedup(res[name], ref)
            rep.row(Row(f"{backbone}: ours {name[5:].replace('-', ', ')} vs reference",
                        rate(res[name]), ref_rate, "img/s", sp, "", None, f"N={n}"))
        # Quality at a fixed number of epochs, per (batch size, bf16).
        settings = [(128, False)] + [(bs, False) for bs in batches]
        if cuda:
            settings += [(128, True), (512, True), (2048, True)]
        qual: dict[tuple[int, bool], float] = {}
        for bs, amp in settings:
            recon, secs = _quality(backbone, q_data, device, bs, q_epochs[backbone], amp=amp)
            qual[bs, amp] = recon
            base = qual[128, False]
            first = (bs, amp) == (128, False)
            rep.row(Row(f"{backbone}: test recon after {q_epochs[backbone]} ep, batch {bs}"
                        + (", bf16" if amp else ""), recon, base, "", None,
                        "" if first else f"<= +{QUALITY_TOLERANCE:.0%} of b128", None if first
                        else recon <= base * (1 + QUALITY_TOLERANCE),
                        f"lr {1e-3 * math.sqrt(bs / 128):.2g}, {len(q_data.x_train)} train imgs, "
                        f"{secs:.0f} s"))
        # Our best: the fastest runner whose (batch size, bf16) held quality.
        held = {k for k, r in qual.items() if r <= qual[128, False] * (1 + QUALITY_TOLERANCE)}
        cands = {k: rate(v) for k, v in res.items() if k != "reference"
                 and (int(k.split("-")[1]), "bf16" in k) in held}
        best = max(cands, key=lambda k: cands[k] or 0.0)
        sp = paired_speedup(res[best], ref)
        target = 20.0 if cuda else 1.3
        rep.row(Row(f"{backbone}: ours at its best where quality holds ({best[5:]})",
                    cands[best], ref_rate, "img/s", sp, f">= {target:g}x", _met(sp, target)))
        epoch_s = 60000 / cands[best] if cands[best] else None
        h100 = cuda and "H100" in torch.cuda.get_device_name(device)
        rep.row(Row(f"{backbone}: 60k-image epoch at best settings", epoch_s, 60000 / ref_rate
                    if ref_rate else None, "s", sp, f"<= {H100_TARGETS[backbone]:g} s (H100)",
                    _met(epoch_s, H100_TARGETS[backbone], lower=True) if h100 else None,
                    "from img/s" + ("" if h100 else "; the target is for an H100")))


def _met(value, target, lower=False) -> bool | None:
    if value is None or not math.isfinite(value):
        return None
    return value <= target if lower else value >= target


# ----------------------------------------------------------------------------- shared machine

# One short training run in a fresh process: digits, the default VAE, batch 128, measured
# for `seconds` alone, then beside a process spinning one core, then alone again. "old":
# torch loads first, with libgomp's own defaults (threads spin while they wait); "new":
# latentviz first, with its defaults (openmp.py).
_SHARED_SCRIPT = r"""
import json, os, subprocess, sys, time
mode, seconds = sys.argv[1], float(sys.argv[2])
if mode == "new":
    import latentviz
import torch
import latentviz as lv

data = lv.load_dataset("digits")
torch.manual_seed(0)
model = lv.build("vae", image_shape=data.image_shape, n_classes=data.n_classes)
phases, rates, at = ["alone", "busy", "alone"], {"alone": [], "busy": []}, {}


class Enough(Exception):
    pass


def report(p):
    step, now = (p.epoch - 1) * p.steps + p.step, time.perf_counter()
    if "start" not in at:
        at["start"] = (step, now)
        return
    step0, t0 = at["start"]
    if now - t0 < seconds:
        return
    rates[phases[0]].append((step - step0) * 128 / (now - t0))
    if at.get("spinner"):
        at.pop("spinner").kill()
    phases.pop(0)
    if not phases:
        raise Enough
    if phases[0] == "busy":
        at["spinner"] = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.3)
    at["start"] = (step, time.perf_counter())


try:
    lv.fit(model, data, lv.TrainConfig(epochs=10000, batch_size=128, log_every=2), report)
except Enough:
    pass
finally:
    if at.get("spinner"):
        at["spinner"].kill()
print(json.dumps({"alone": sum(rates["alone"]) / 2, "busy": rates["busy"][0],
                  "threads": torch.get_num_threads(), "policy": os.environ.get("OMP_WAIT_POLICY")}))
"""


def _shared_run(mode: str, seconds: float) -> dict:
    """Training images per second of one fresh process under ``mode``'s OpenMP defaults,
    alone (the mean of before and after) and beside a process that spins one core."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _SHARED_SCRIPT, mode, str(seconds)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"training process failed: {out.stderr[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_shared(rep: Report, ctx: dict) -> None:
    rep.section("shared", "a shared machine: training alone and beside a busy process, "
                "old and new OpenMP defaults")
    seconds, repeats = (1.5, 1) if ctx["quick"] else (6.0, 3)
    runs: dict[str, list] = {"old": [], "new": []}
    for r in range(repeats):  # rotated, as interleave() does
        for mode in (("old", "new") if r % 2 == 0 else ("new", "old")):
            runs[mode].append(_shared_run(mode, seconds))
    old, new = runs["old"][0], runs["new"][0]
    rep.note(f"digits, default VAE, batch 128: one fit() per process and repeat, measured "
             f"{seconds:g} s alone, {seconds:g} s beside a process spinning one core "
             f"(`while True: pass`), {seconds:g} s alone again; {repeats} repeat(s), old and "
             f"new alternating; {ctx['env']['cores']} cores, load average {_load()} at the end. "
             f"old: torch imported first, OMP_WAIT_POLICY unset, {old['threads']} threads; new: "
             f"latentviz first, OMP_WAIT_POLICY={new['policy']}, {new['threads']} threads")

    def row(what, ours, ref):
        a = [x[ours[1]] for x in runs[ours[0]]]
        b = [x[ref[1]] for x in runs[ref[0]]]
        rep.row(Row(what, _median(a), _median(b), "img/s", _median([x / y for x, y in zip(a, b)]),
                    note=f"{' '.join(ours)} vs {' '.join(ref)}"))
    row("beside a busy process: new defaults vs old", ("new", "busy"), ("old", "busy"))
    row("alone: new defaults vs old", ("new", "alone"), ("old", "alone"))
    row("old defaults: beside a busy process vs alone", ("old", "busy"), ("old", "alone"))
    row("new defaults: beside a busy process vs alone", ("new", "busy"), ("new", "alone"))


# ----------------------------------------------------------------------------- 2. TreeVAE

def _grow(model, leaves: int) -> None:
    """Split leaves breadth-first (shallowest first, within max_depth) to ``leaves``."""
    while model.n_leaves < leaves:
        order = sorted(model.leaf_order, key=lambda n: model.tree[n].depth)
        leaf = next((n for n in order if model.tree[n].depth < model.config.max_depth), None)
        if leaf is None:
            return
        model.split_leaf(leaf)


def _tree_epoch_seconds(variant, cfg, data, leaves, train_cfg, device, repeats
                        ) -> tuple[float, int]:
    """(median seconds per training image of the shared trainer on a tree grown to
    ``leaves``, the leaves it has)."""
    from .train import fit

    torch.manual_seed(0)
    model = variant.cls(cfg).to(device)
    _grow(model, leaves)
    model.to(device)
    fit(model, _slice(data, 2 * train_cfg.batch_size, 256), train_cfg.replace(epochs=1), prepare=False)
    per_image = []
    for r in range(repeats):
        hist = fit(model, data, train_cfg.replace(epochs=1, seed=r + 1), prepare=False)
        per_image.append(sum(hist.seconds) / len(data.x_train))
    return _median(per_image), model.n_leaves


def _tree_step_row(rep: Report, variant, cfg, tc, device, quick: bool) -> None:
    """One training step of a 10-leaf tree (exact decoding), the nodes' networks evaluated
    together (``model.stacked``, the default) against one node at a time (the
    implementation before issue 16, kept as the reference), interleaved in one run on one
    thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = variant.cls(cfg).to(device)
        _grow(model, cfg.max_leaves)
        model.to(device).train()
        x = torch.rand(tc.batch_size, *cfg.image_shape, device=device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        steps = 2 if quick else 5

        def runner(stacked: bool):
            def run() -> int:
                model.stacked = stacked
                for _ in range(steps):
                    out = model.loss(x)
                    opt.zero_grad(set_to_none=True)
                    out.total.backward()
                    opt.step()
                return steps
            return run

        runs = interleave({"stacked": runner(True), "per node": runner(False)},
                          2 if quick else 6, device)
        model.stacked = True
    finally:
        torch.set_num_threads(threads)
    ms = {k: 1000 / rate(v) for k, v in runs.items()}
    cpu = {k: 1000 * _median([c / n for n, _, c in v]) for k, v in runs.items()}
    ratio = paired_speedup(runs["stacked"], runs["per node"])
    rep.row(Row(f"step of a {model.n_leaves}-leaf tree, stacked nodes vs per node", ms["stacked"],
                ms["per node"], "ms", ratio, ">= 3x", _met(ratio, 3.0),
                f"{device.type}, 1 thread, batch {tc.batch_size}, exact decoding, forward + "
                f"backward + Adam; CPU ms {cpu['stacked']:.0f} vs {cpu['per node']:.0f}"))


def schedule_epochs(cfg, leaves_final: int) -> list[tuple[str, float, int]]:
    """The growth schedule as (stage, full-data-equivalent epochs, leaves during it).

    Assumes growth runs from 2 leaves to ``leaves_final`` one split at a time, each new
    subtree trains on the share of the data of the leaf it splits (1 / leaves before the
    split, leaves of equal size), retrains follow every ``retrain_every`` splits while
    growth goes on, and pruning removes nothing."""
    out = [("initial", float(cfg.epochs_initial), 2)]
    splits = leaves_final - 2
    for s in range(1, splits + 1):
        out.append((f"subtree {s}", cfg.epochs_subtree / (1 + s), 2 + s))
        if s % cfg.retrain_every == 0 and s < splits:
            out.append((f"retrain after {s}", float(cfg.epochs_retrain), 2 + s))
    out.append(("final", float(cfg.epochs_final), leaves_final))
    return out


def bench_treevae(rep: Report, ctx: dict) -> None:
    rep.section("treevae", "TreeVAE: the full MNIST growth schedule")
    from .models import VARIANTS
    from .train import TrainConfig, pick_device, train_model

    variant = VARIANTS.get("treevae")
    if variant is None:
        rep.skip("TreeVAE", "no TreeVAE module (latentviz.models.VARIANTS has no 'treevae')")
        return
    device = pick_device("auto")
    quick = ctx["quick"]
    try:
        data, _ = _load_mnist(ctx["data_dir"])
    except Exception as exc:  # noqa: BLE001
        rep.skip("TreeVAE", f"MNIST not available ({type(exc).__name__}: {exc})"[:300])
        return
    module = sys.modules[variant.cls.__module__]
    ref_train = dict(getattr(module, "REFERENCE_TRAIN", {"batch_size": 256, "lr": 1e-3,
                                                         "weight_decay": 1e-5, "seed": 42}))
    tc = TrainConfig(**{k: v for k, v in ref_train.items() if k in ("batch_size", "lr",
                                                                  "weight_decay", "seed")},
                     device=device.type)
    cfg = variant.config(image_shape=(1, 28, 28), n_classes=10, schedule="reference")
    if device.type != "cuda":
        rep.skip("full schedule wall time", "no CUDA GPU here: the schedule runs only on a GPU; "
                 "below, a CPU estimate from measured epochs")
    elif quick:
        rep.skip("full schedule wall time", "--quick (hours of GPU time)")
    else:
        torch.manual_seed(tc.seed)
        model = variant.cls(cfg)
        model.variant_name = "treevae"
        with Clock(device) as c:
            hist = train_model(model, data, tc)
        rep.row(Row(f"full MNIST schedule on {ctx['env']['device']}", c.wall / 3600, None, "h",
                    None, "", None, f"{hist.epochs} epochs, {model.n_leaves} leaves, "
                    f"final test recon {hist.test[-1].get('recon', float('nan')):.1f}"))
    _tree_step_row(rep, variant, cfg, tc, device, quick)
    # CPU (or GPU) seconds per epoch at the initial and the final size, extrapolated.
    n = 512 if quick else 5120
    d = _slice(data, n, max(n // 6, 64))
    repeats = 1 if quick else 3
    leaves_final = cfg.max_leaves
    per_img = {}
    for leaves in (2, leaves_final):
        per_img[leaves], got = _tree_epoch_seconds(variant, cfg, d, leaves, tc, device, repeats)
        rep.row(Row(f"epoch of 60k at {got} leaves ({device.type}, measured on {n})",
                    per_img[leaves] * 60000, None, "s", None, "", None,
                    f"batch {tc.batch_size}, {repeats} repeats, median"))
        if got != leaves:
            leaves_final = got
            per_img[leaves_final] = per_img.pop(leaves)
    stages = schedule_epochs(cfg, leaves_final)
    lo, hi = per_img[2], per_img[leaves_final]
    total = sum(e * 60000 * (lo + (hi - lo) * (k - 2) / max(leaves_final - 2, 1))
                for _, e, k in stages)
    full_eq = sum(e for _, e, _ in stages)
    rep.row(Row(f"ESTIMATE: full schedule on {device.type} (not run)", total / 3600, None, "h",
                None, "", None, f"{full_eq:.0f} full-data epochs, cost linear in leaves"))
    rep.note(f"reference schedule: {cfg.epochs_initial} initial, {cfg.epochs_subtree} per subtree, "
             f"{cfg.epochs_retrain} retrain every {cfg.retrain_every} splits, {cfg.epochs_final} "
             f"final epochs, up to {cfg.max_leaves} leaves; the estimate assumes "
             f"{leaves_final - 2} splits, subtrees on 1/leaves of the data, no pruning.")


# ----------------------------------------------------------------------------- 3. projections

def _latents(ctx, n_test_only: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Latent means of MNIST (test set, or train+test) under the shipped VAE checkpoint, with
    their labels; a seeded 10-cluster Gaussian mixture when checkpoint or dataset is missing."""
    from . import checkpoints
    from .embeddings import encode_means

    path = REPO / "checkpoints" / "mnist-vae.safetensors"
    try:
        model, _ = checkpoints.load(path)
        data, _ = _load_mnist(ctx["data_dir"])
        x = data.x_test if n_test_only else torch.cat([data.x_train, data.x_test])
        y = data.y_test if n_test_only else torch.cat([data.y_train, data.y_test])
        return (encode_means(model, x).numpy().astype(np.float64), y.cpu().numpy(),
                f"{path.name} latent means")
    except Exception:  # noqa: BLE001 - fall back to synthetic points of the same shape
        n = 10000 if n_test_only else 70000
        rng = np.random.default_rng(0)
        centres = rng.normal(0, 3, (10, 20))
        y = rng.integers(0, 10, n)
        return centres[y] + rng.normal(size=(n, 20)), y, "synthetic mixture"


_COLD_SCRIPT = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import numpy as np
z = np.load(sys.argv[1])
mode = sys.argv[2]
if mode == "module":
    from latentviz import projections
else:
    from latentviz.bench import umap_learn_defaults
t1 = time.perf_counter()  # the first call pays for importing umap, as the app's does
if mode == "module":
    projections.umap(z, random_state=0)
else:
    umap_learn_defaults(z, random_state=0)
t2 = time.perf_counter()
print(json.dumps({"import_and_load": t1 - t0, "first_call": t2 - t1, "total": t2 - t0}))
"""


def _cold_umap(z_path: str, cache_dir: str, mode: str = "module") -> dict:
    """A fresh interpreter: import, then the first UMAP call; wall and CPU seconds."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir, "PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    with Clock() as c:
        proc = subprocess.run([sys.executable, "-c", _COLD_SCRIPT, z_path, mode, str(REPO)],
                              capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                           f"exit {proc.returncode}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "process_wall": c.wall, "process_cpu": c.cpu}


def umap_learn_defaults(z: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1,
                        random_state: int = 0) -> np.ndarray:
    """The reference for latentviz.projections.umap: umap-learn as it comes (pynndescent's
    approximate neighbours, whose numba code cannot be cached, and its default epochs:
    500 up to 10,000 points), seeded and single-threaded like the module."""
    import warnings

    import umap

    model = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state,
                      n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit_transform(z)


def map_quality(z: np.ndarray, xy: np.ndarray, y: np.ndarray | None, n: int = 3000) -> str:
    """Trustworthiness (k = 15, scikit-learn) on the first ``n`` points and the 5-NN label
    accuracy in 2-D (5-fold): how well a map keeps the latent neighbourhoods."""
    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    t = trustworthiness(z[:n], xy[:n], n_neighbors=15)
    if y is None:
        return f"trustworthiness {t:.4f}"
    acc = cross_val_score(KNeighborsClassifier(5), xy, y, cv=5).mean()
    return f"trustworthiness {t:.4f}, 5-NN acc {acc:.3f}"


def bench_projections(rep: Report, ctx: dict) -> None:
    rep.section("projections", "latentviz.projections on test-set latents")
    try:
        from . import projections
    except ImportError as exc:
        rep.skip("projections", f"latentviz.projections is not there yet ({exc})")
        return
    missing = [f for f in ("pca", "tsne", "umap") if not hasattr(projections, f)]
    if missing:
        rep.skip("projections", f"latentviz.projections has no {', '.join(missing)} yet")
        return
    quick = ctx["quick"]
    z, labels, source = _latents(ctx)
    if quick:
        z, labels = z[:600], labels[:600]
    n = len(z)
    rep.note(f"{n} points of {z.shape[1]} dims: {source}; {ctx['env']['cores']} cores, "
             f"load average {_load()}")

    # PCA: first call (imports included) and warm median.
    with Clock() as first:
        projections.pca(z, random_state=0)
    warm = []
    for _ in range(3 if quick else 5):
        with Clock() as c:
            projections.pca(z, random_state=0)
        warm.append(c.wall)
    rep.row(Row(f"PCA, {n} points (warm; first call {fmt(first.wall, 's')})", _median(warm),
                None, "s", None, "< 1 s", _met(_median(warm), 1.0, lower=True)))

    # t-SNE: openTSNE FFT (the module) vs scikit-learn Barnes-Hut, same perplexity,
    # iterations (250 early exaggeration + 500) and seed; ABBA order.
    from sklearn.manifold import TSNE

    updates = []

    def ours():
        proj = projections.fit(z, "tsne", random_state=0,
                               progress=lambda f, m: updates.append(f))
        kl.setdefault("ours", float(getattr(proj._model, "kl_divergence", float("nan"))))
        return 1

    def sk():
        iters = {"max_iter": 750} if "max_iter" in TSNE().get_params() else {"n_iter": 750}
        t = TSNE(perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=0,
                 method="barnes_hut", **iters)
        t.fit_transform(z)
        kl.setdefault("ref", float(t.kl_divergence_))
        return 1

    kl: dict = {}
    res = interleave({"ours": ours, "sklearn": sk}, 1 if quick else 2, "cpu")
    t_ours, t_ref = _median([w for _, w, _ in res["ours"]]), _median([w for _, w, _ in res["sklearn"]])
    sp = _median([b[1] / a[1] for a, b in zip(res["ours"], res["sklearn"])])
    rep.row(Row(f"t-SNE, {n} points: openTSNE FFT vs sklearn Barnes-Hut", t_ours, t_ref, "s", sp,
                "<= 30 s", _met(t_ours, 30.0, lower=True),
                f"KL {kl.get('ours', float('nan')):.3f} vs {kl.get('ref', float('nan')):.3f}; "
                f"cpu {_median([c for _, _, c in res['ours']]):.1f} vs "
                f"{_median([c for _, _, c in res['sklearn']]):.1f} s"))

    if quick:
        rep.skip("UMAP warm and cold", "--quick: umap-learn's numba compilation alone takes "
                 "about a minute on 2 cores")
        rep.skip("70,000 points", "--quick")
        return

    # UMAP cold: fresh interpreters; first with an empty numba cache (a new machine),
    # then with the cache that run filled (every later start).
    tmp = Path(tempfile.mkdtemp(prefix="latentviz-bench-"))
    try:
        z_path = str(tmp / "z.npy")
        np.save(z_path, z)
        cache = str(tmp / "numba-cache")
        colds = {}
        for label, mode in (("empty numba cache", "module"), ("numba cache filled", "module"),
                            ("umap-learn defaults, cache filled", "reference")):
            try:
                colds[label] = _cold_umap(z_path, cache, mode)
            except Exception as exc:  # noqa: BLE001
                rep.skip(f"UMAP cold ({label})", f"{type(exc).__name__}: {exc}"[:300])
        ref = colds.get("umap-learn defaults, cache filled")
        for label, r in colds.items():
            if r is ref:
                continue
            rep.row(Row(f"UMAP cold, {n}: {label}", r["first_call"],
                        ref["first_call"] if ref else None, "s",
                        ref["first_call"] / r["first_call"] if ref else None, "<= 20 s",
                        _met(r["first_call"], 20.0, lower=True),
                        f"first call; +{r['import_and_load']:.1f} s imports; process cpu "
                        f"{r['process_cpu']:.0f} s; reference: umap-learn's defaults "
                        "(pynndescent, 500 epochs), numba cache filled", r))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # UMAP warm: this process, after a first call has compiled everything; ABBA order.
    with Clock() as c1:
        ours = projections.umap(z, random_state=0)
    ref_xy = umap_learn_defaults(z)
    res = interleave({"module": lambda: projections.umap(z, random_state=0) is not None,
                      "umap-learn": lambda: umap_learn_defaults(z) is not None}, 3, "cpu")
    warm = _median([w for _, w, _ in res["module"]])
    rep.row(Row(f"UMAP warm, {n} points (first call here {fmt(c1.wall, 's')})", warm,
                _median([w for _, w, _ in res["umap-learn"]]), "s",
                _median([b[1] / a[1] for a, b in zip(res["module"], res["umap-learn"])]),
                "<= 8 s", _met(warm, 8.0, lower=True),
                f"cpu {_median([c for _, _, c in res['module']]):.1f} s; exact kNN + 200 epochs"
                f" vs umap-learn's defaults; ours: {map_quality(z, ours, labels)}; umap-learn: "
                f"{map_quality(z, ref_xy, labels)}"))

    # 70,000 points: every method finishes and reports progress.
    z70, _, source70 = _latents(ctx, n_test_only=False)
    for method in projections.METHODS:
        calls = []
        with Clock() as c:
            try:
                proj = projections.fit(z70, method, random_state=0,
                                       progress=lambda f, m: calls.append((f, m)))
                ok = proj.embedding.shape == (len(z70), 2) and np.isfinite(proj.embedding).all()
            except Exception as exc:  # noqa: BLE001
                ok, calls = False, calls + [(None, f"{type(exc).__name__}: {exc}")]
        rep.row(Row(f"{method}, {len(z70):,} points with progress", c.wall, None, "s", None,
                    "works + progress", ok and len(calls) >= 2,
                    f"{len(calls)} progress updates; cpu {c.cpu:.0f} s"))


# ----------------------------------------------------------------------------- 4. the app

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app_checkpoint(ctx) -> tuple[Path | None, str]:
    """The shipped checkpoint the app is timed with: MNIST VAE if its data is here, else
    the digits VAE."""
    mnist = REPO / "checkpoints" / "mnist-vae.safetensors"
    if mnist.exists() and not ctx["quick"]:
        try:
            _load_mnist(ctx["data_dir"])
            return mnist, "mnist"
        except Exception:  # noqa: BLE001
            pass
    digits = REPO / "checkpoints" / "digits-vae.safetensors"
    return (digits, "digits") if digits.exists() else (None, "")


@contextlib.contextmanager
def _app_env(ckpt: Path, data_dir):
    """Env for the app: only ``ckpt`` in the shipped folder, an empty runs folder."""
    tmp = Path(tempfile.mkdtemp(prefix="latentviz-bench-app-"))
    (tmp / "shipped").mkdir()
    (tmp / "runs").mkdir()
    shutil.copy2(ckpt, tmp / "shipped" / ckpt.name)
    env = {"LATENTVIZ_CHECKPOINTS": str(tmp / "shipped"), "LATENTVIZ_RUNS": str(tmp / "runs")}
    if data_dir:
        env["LATENTVIZ_DATA"] = str(Path(data_dir).expanduser().resolve())
    try:
        yield env, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Socket:
    """Streamlit's websocket as seen by the browser: when a rerun was asked for (and
    whether of a fragment only) and when the server said the run finished."""

    def __init__(self, page):
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.BackMsg, self.ForwardMsg = BackMsg, ForwardMsg
        self.reruns: list[tuple[float, bool]] = []   # (time, fragment-only)
        self.finished: list[float] = []
        page.on("websocket", self._attach)

    def _attach(self, ws) -> None:
        ws.on("framesent", lambda p: self._record(p, self.BackMsg, "rerun_script", self.reruns))
        ws.on("framereceived", lambda p: self._record(p, self.ForwardMsg, "script_finished",
                                                      self.finished))

    @staticmethod
    def _record(payload, message, kind: str, times: list) -> None:
        t = time.perf_counter()
        if isinstance(payload, (bytes, bytearray)):
            with contextlib.suppress(Exception):  # not every frame is a message we know
                msg = message.FromString(bytes(payload))
                if msg.WhichOneof("type") == kind:
                    times.append((t, bool(msg.rerun_script.fragment_id)) if kind == "rerun_script"
                                 else t)


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _page_path(script: str) -> str:
    """The URL path app.py gives ``pages/<script>``: its ``url_path`` if set, else the
    file's stem (Streamlit's default)."""
    import re

    text = (REPO / "app.py").read_text()
    m = re.search(r'st\.Page\(\s*["\']pages/' + re.escape(script) + r'["\'][^)]*?url_path\s*=\s*["\']([^"\']+)',
                  text)
    return m.group(1) if m else Path(script).stem


def _wait_plots(page, n: int, timeout_ms: float = 300_000) -> None:
    page.wait_for_function(
        f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}",
        timeout=timeout_ms)


def _idle(page, timeout_ms: float = 300_000) -> None:
    page.wait_for_function(
        "() => { const s = document.querySelector('[data-testid=\"stStatusWidget\"]');"
        " return !s || !s.innerText.includes('Running'); }", timeout=timeout_ms)


@contextlib.contextmanager
def app_server(env_extra: dict, flags: tuple = ()):
    """``streamlit run app.py`` on a free port (its log beside ``$LATENTVIZ_RUNS`` of
    ``env_extra``); yields (process, url, start time, seconds until its health check
    answered). The bench and the browser tests start the app this way."""
    import urllib.request

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(env_extra["LATENTVIZ_RUNS"]).parent / f"streamlit-{port}.log"
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false", *flags],
            cwd=REPO, env={**os.environ, **env_extra}, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            if server.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError("streamlit did not start: " + log.read_text()[-500:])
            time.sleep(0.1)
        yield server, url, t0, time.perf_counter() - t0
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def _browser_app(rep: Report, ctx: dict, ckpt: Path, env_extra: dict) -> None:
    from playwright.sync_api import sync_playwright

    repeats = 3
    latent = _page_path("Latent_space.py")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            with app_server(env_extra) as (server, url, t0, t_up):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/{latent}")
                _wait_plots(page, 1)
                cold = time.perf_counter() - t0
                page.close()
                cached, server_s = [], []
                for _ in range(repeats):
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    sock = _Socket(page)
                    t1 = time.perf_counter()
                    page.goto(f"{url}/{latent}")
                    _wait_plots(page, 1)
                    cached.append(time.perf_counter() - t1)
                    _idle(page)
                    if sock.reruns and sock.finished:
                        server_s.append(sock.finished[0] - sock.reruns[0][0])
                    page.close()
                rep.row(Row(f"streamlit run -> first latent plot, cold ({ckpt.name})", cold, None,
                            "s", None, "", None, f"server up after {t_up:.1f} s; PCA of 2,000"))
                rep.row(Row("new session -> latent plot, caches warm", _median(cached), None,
                            "s", None, "", None, f"median of {repeats}, browser already open; "
                            f"script run {fmt(_median(server_s), 's')} of it"))
                as_is = _slider(browser, url, server.pid)
                if as_is is None:
                    rep.skip("slider interaction", "the Samples page has no 'Samples per row' slider")
                    return
            # Streamlit runs gc.collect() after every script run, fragments included; with
            # torch, scikit-learn and Plotly loaded that full collection is most of a
            # fragment's server time. The same moves on a second server with the setting
            # flipped show what it costs (or would save, while the app still collects).
            gc_on = _post_script_gc()
            with app_server(env_extra, ("--runner.postScriptGC", str(not gc_on).lower())
                         ) as (server, url, _, _):
                other = _slider(browser, url, server.pid)
            as_is.what = f"Samples slider, app as configured (postScriptGC {str(gc_on).lower()})"
            if other is not None and gc_on:
                rep.row(as_is)
                other.what = "Samples slider, runner.postScriptGC=false (proposal)"
                other.reference, other.ratio = as_is.ours, _speedup(as_is.ours, other.ours)
                rep.row(other)
            elif other is not None:
                as_is.reference, as_is.ratio = other.ours, _speedup(other.ours, as_is.ours)
                as_is.note += " | reference: Streamlit's default, postScriptGC true"
                rep.row(as_is)
            else:
                rep.row(as_is)
        finally:
            browser.close()


def _post_script_gc() -> bool:
    """Whether the app's .streamlit/config.toml leaves Streamlit's gc.collect() after
    every script run on (Streamlit's default)."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python < 3.11
        return True
    path = REPO / ".streamlit" / "config.toml"
    try:
        return bool(tomllib.loads(path.read_text()).get("runner", {}).get("postScriptGC", True))
    except (OSError, ValueError):
        return True


def _speedup(reference: float | None, ours: float | None) -> float | None:
    return reference / ours if reference and ours else None


def _slider(browser, url: str, server_pid: int, moves: int = 7) -> Row | None:
    """Samples page, "Samples per row" slider (a fragment): rerun sent -> script finished,
    as a Row (None if the page has no such slider)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    sock = _Socket(page)
    page.goto(f"{url}/{_page_path('Samples.py')}")
    _wait_plots(page, 1)
    _idle(page)
    page.wait_for_timeout(500)
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Samples per row")
    if slider.count() == 0:
        page.close()
        return None
    # The keyboard-focusable part: a range input (react-aria, Streamlit >= 1.5x) or a
    # role="slider" thumb (older releases).
    thumb = slider.first.locator('input[type="range"], [role="slider"]').first
    thumb.focus()
    times, dom, fragment_only = [], [], 0
    cpu0 = _process_cpu(server_pid)
    for i in range(moves):
        before_r, before_f = len(sock.reruns), len(sock.finished)
        t0 = time.perf_counter()
        page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
        deadline = time.perf_counter() + 60
        while (len(sock.reruns) <= before_r or len(sock.finished) <= before_f) \
                and time.perf_counter() < deadline:
            page.wait_for_timeout(5)
        if len(sock.reruns) > before_r and len(sock.finished) > before_f:
            times.append(sock.finished[-1] - sock.reruns[before_r][0])
            dom.append(sock.finished[-1] - t0)
            fragment_only += sock.reruns[before_r][1]
        _idle(page)
        page.wait_for_timeout(300)
    cpu1 = _process_cpu(server_pid)
    page.close()
    med = _median(times)
    cpu = (cpu1 - cpu0) / moves if cpu0 is not None and cpu1 is not None else None
    return (Row("Samples slider: rerun sent -> script finished", med, None, "s", None,
                "<= 200 ms", _met(med, 0.2, lower=True),
                f"median of {len(times)}, {fragment_only} fragment-only; server cpu "
                f"{fmt(cpu, 's')} per move; keypress -> finished {fmt(_median(dom), 's')}",
                {"seconds": times, "server_cpu_per_move": cpu}))


def _apptest_app(rep: Report, ctx: dict, ckpt: Path, env_extra: dict, why: str) -> None:
    """No browser: Streamlit's AppTest runs the pages in this process (full reruns only:
    AppTest does not run a fragment alone, so the slider time is an upper bound)."""
    from streamlit.testing.v1 import AppTest

    from .ui import state

    saved = {k: os.environ.get(k) for k in env_extra}
    os.environ.update(env_extra)
    try:
        path = str(Path(env_extra["LATENTVIZ_CHECKPOINTS"]) / ckpt.name)
        runs = []
        for _ in range(3):
            at = AppTest.from_file(str(REPO / "pages" / "Latent_space.py"), default_timeout=600)
            at.session_state[state.CHECKPOINT] = path
            with Clock() as c:
                at.run()
            if at.exception:
                raise RuntimeError(f"Latent space page raised: {at.exception[0].message}"[:300])
            runs.append(c.wall)
        rep.row(Row(f"Latent space page, first run (AppTest; {ckpt.name})", runs[0], None, "s",
                    None, "", None, why))
        rep.row(Row("Latent space page, caches warm (AppTest)", _median(runs[1:]), None, "s",
                    None, "", None, "no browser: server side only"))
        at = AppTest.from_file(str(REPO / "pages" / "Samples.py"), default_timeout=600)
        at.session_state[state.CHECKPOINT] = path
        at.run()
        try:
            slider = at.slider(key="sm.c.n")
        except KeyError:
            rep.skip("slider interaction", "the Samples page has no slider 'sm.c.n'")
            return
        times = []
        for i in range(5):
            slider = at.slider(key="sm.c.n")
            slider.set_value(int(slider.value) + (1 if i % 2 == 0 else -1))
            with Clock() as c:
                at.run()
            times.append(c.wall)
        med = _median(times)
        rep.row(Row("Samples slider, full page rerun (AppTest)", med, None, "s", None,
                    "<= 200 ms", _met(med, 0.2, lower=True),
                    "upper bound: the browser reruns only the fragment"))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def bench_app(rep: Report, ctx: dict) -> None:
    rep.section("app", "the Streamlit app: first latent plot and a slider interaction")
    missing = [p for p in ("app.py", "pages/Latent_space.py", "pages/Samples.py")
               if not (REPO / p).exists()]
    if missing:
        rep.skip("app", f"{', '.join(missing)} not there yet")
        return
    try:
        import streamlit  # noqa: F401
    except ImportError:
        rep.skip("app", "streamlit is not installed")
        return
    ckpt, dataset = _app_checkpoint(ctx)
    if ckpt is None:
        rep.skip("app", "no shipped checkpoint (checkpoints/mnist-vae or digits-vae.safetensors)")
        return
    browser_ok, why = True, ""
    if ctx["quick"]:
        browser_ok, why = False, "--quick: AppTest instead of a browser"
    elif not Path(CHROMIUM).exists():
        browser_ok, why = False, f"{CHROMIUM} missing: AppTest instead of a browser"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            browser_ok, why = False, "playwright missing: AppTest instead of a browser"
    with _app_env(ckpt, ctx["data_dir"]) as (env, _):
        if browser_ok:
            _browser_app(rep, ctx, ckpt, env)
        else:
            rep.note(why)
            _apptest_app(rep, ctx, ckpt, env, why)


# ----------------------------------------------------------------------------- data

def bench_data(rep: Report, ctx: dict) -> None:
    rep.section("data", "your own images: a 60,000-image folder and .npz beside MNIST's load")
    from PIL import Image

    from .data import _load_cached, default_data_dir, load_path_dataset

    root = str((Path(ctx["data_dir"]).expanduser() if ctx["data_dir"] else default_data_dir())
               .resolve())
    try:
        t0 = time.perf_counter()
        mnist = _load_cached.__wrapped__("mnist", root, False)  # not the lru_cache's copy
        t_mnist = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - any reason the dataset is missing
        rep.skip("data loading", f"MNIST not available ({type(exc).__name__}: {exc})"[:300])
        return
    n = 600 if ctx["quick"] else 60000
    x = (mnist.x_train[:n, 0] * 255).round().to(torch.uint8).numpy()
    y = mnist.y_train[:n].numpy()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mnist_png"
        for k in range(10):
            (folder / str(k)).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(x[i]).save(folder / str(y[i]) / f"{i:05d}.png")
        np.savez(Path(tmp) / "mnist.npz", x=x, y=y)
        rep.note(f"{n:,} MNIST training images written as 28x28 grey PNGs in 10 class "
                 f"folders ({sum(f.stat().st_size for f in folder.rglob('*.png')) / 2**20:.0f} "
                 "MiB) and as one .npz; each loaded once (first read after writing, so the "
                 "files are in the page cache); reference = MNIST's 70,000 images from its "
                 f"IDX files; {os.cpu_count()} CPUs, the folder read by up to 8 threads")
        for what, path in (("folder of PNGs", folder), (".npz", Path(tmp) / "mnist.npz")):
            t0 = time.perf_counter()
            data = load_path_dataset(path)
            t = time.perf_counter() - t0
            assert len(data.x_train) + len(data.x_test) == n
            rep.row(Row(f"load {n:,} images, {what}", t, t_mnist, "s", t_mnist / t,
                        note=f"{n / t:,.0f} img/s (incl. split and content hash)"))


# ----------------------------------------------------------------------------- entry

BENCHES = {"train": bench_train, "shared": bench_shared, "treevae": bench_treevae,
           "projections": bench_projections, "data": bench_data, "app": bench_app}


def main(args) -> int:
    """Run the benchmarks ``args.only`` names (all by default), print every figure and,
    with ``args.out``, write them as JSON. Returns 1 if a section failed."""
    only = [s.strip() for s in (args.only or ",".join(SECTIONS)).split(",") if s.strip()]
    unknown = [s for s in only if s not in BENCHES]
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}; choose from "
              f"{', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    env = environment(args)
    ctx = {"quick": bool(args.quick), "data_dir": args.data_dir, "env": env}
    rep = Report()
    v = env["versions"]
    print(f"latentviz bench{' --quick' if args.quick else ''}  {env['date']}  commit {env['commit']}")
    print(f"device {env['device']} | cpu {env['cpu']} x{env['cores']} | torch threads "
          f"{env['torch_threads']} | OMP_WAIT_POLICY {env['omp_wait_policy']} | load {env['load_average']}")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) +
          f", python {env['python']}")
    print("ratio = speed-up of ours over the reference (median of paired, interleaved repeats)")
    load = (env["load_average"] or [0.0])[0]
    if "OMP_WAIT_POLICY" not in os.environ and load > env["cores"]:
        print(f"warning: load {load:.1f} on {env['cores']} cores with OMP_WAIT_POLICY unset: "
              "OpenMP threads that spin while waiting can make multi-threaded ops 10x slower "
              "here; for steadier figures run with OMP_WAIT_POLICY=PASSIVE")
    sys.stdout.flush()
    failed = []
    t0 = time.perf_counter()
    for name in SECTIONS:
        if name not in only:
            continue
        t_section = time.perf_counter()
        try:
            BENCHES[name](rep, ctx)
            print(f"  ({name}: {time.perf_counter() - t_section:.0f} s)", flush=True)
        except Exception as exc:  # noqa: BLE001 - report it and go on with the next section
            failed.append(name)
            if rep.current is None or name not in rep.sections:
                rep.section(name, "failed")
            rep.sections[name]["error"] = f"{type(exc).__name__}: {exc}"
            print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
    env["seconds"] = round(time.perf_counter() - t0, 1)
    env["load_average_end"] = _load()
    print(f"\ndone in {env['seconds']:.0f} s; load average at the end {env['load_average_end']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"env": env, "sections": rep.to_dict()}, indent=2,
                                             default=_json_default))
        print(f"wrote {args.out}")
    return 1 if failed else 0


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)
