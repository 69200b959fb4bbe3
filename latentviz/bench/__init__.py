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

One module per section (``train``, ``shared``, ``treevae``, ``projections``, ``data``,
``app``) over shared ``results`` (rows, tables, JSON), ``timing`` (clocks, interleaved
paired repeats) and ``environment`` (the machine, the data slices).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .app import app_server, bench_app
from .data import bench_data
from .environment import environment
from .projections import bench_projections, umap_learn_defaults
from .results import Report, Row, _json_default
from .shared import bench_shared
from .timing import _load
from .train import bench_train
from .treevae import bench_treevae

__all__ = ["SECTIONS", "BENCHES", "main", "app_server", "umap_learn_defaults", "Report", "Row"]


SECTIONS = ("train", "shared", "treevae", "projections", "data", "app")


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
    ctx = {"quick": bool(args.quick), "data_dir": args.data_dir, "env": env,
           "full_schedule": not getattr(args, "no_full_schedule", False)}
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
