"""Section ``shared``: a short training run alone and beside a spinning process, under the
old OpenMP defaults and latentviz's."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from .environment import REPO
from .results import Report, Row
from .timing import _load, _median


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
