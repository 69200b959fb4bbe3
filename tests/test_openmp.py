"""On a shared machine: passive OpenMP threads, as many as the usable cores, unless the user
chose; set before torch starts its threads, for the CLI and the app alike."""
from __future__ import annotations

import ast
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = ("import json, os, torch; print(json.dumps({'policy': os.environ.get('OMP_WAIT_POLICY'), "
          "'threads': torch.get_num_threads(), 'applied': o.APPLIED}))")
# latentviz/openmp.py alone (importing the package costs seconds per fresh process):
# what the package's first lines run, before torch.
JUST_OPENMP = ("import importlib.util as u; s = u.spec_from_file_location('o', 'latentviz/openmp.py'); "
               "o = u.module_from_spec(s); s.loader.exec_module(o); o.apply_defaults()")


def probe(first: str, env_extra: dict | None = None, cores: set | None = None) -> dict:
    """A fresh interpreter that runs ``first`` (binding the openmp module to ``o``), then
    reports what its torch uses."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(env_extra or {})
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    out = subprocess.run([sys.executable, "-c", f"{first}; {REPORT}"], cwd=ROOT, env=env,
                         preexec_fn=pin, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_latentviz_makes_threads_passive_and_as_many_as_the_usable_cores():
    cores = len(os.sched_getaffinity(0))
    got = probe("import latentviz.openmp as o")
    assert got == {"policy": "PASSIVE", "threads": cores,
                   "applied": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(cores)}}


def test_the_thread_count_follows_the_cpu_affinity():
    got = probe(JUST_OPENMP, cores={min(os.sched_getaffinity(0))})  # as under taskset -c N
    assert got["threads"] == 1 and got["applied"]["OMP_NUM_THREADS"] == "1"


def test_the_users_own_settings_are_kept():
    # (torch caps OMP_NUM_THREADS at the cores, so the user's choice here is one thread)
    got = probe(JUST_OPENMP, {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"})
    assert got == {"policy": "ACTIVE", "threads": 1, "applied": {}}
    got = probe(JUST_OPENMP, {"OMP_NUM_THREADS": "1"})
    assert got == {"policy": "PASSIVE", "threads": 1, "applied": {"OMP_WAIT_POLICY": "PASSIVE"}}


def test_nothing_is_changed_once_torch_has_started_its_runtime():
    got = probe("import torch; " + JUST_OPENMP)
    assert got["policy"] is None and got["applied"] == {}


def test_the_app_imports_latentviz_before_anything_that_loads_openmp():
    tree = ast.parse((ROOT / "app.py").read_text())
    first = next(n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    assert isinstance(first, ast.Import) and first.names[0].name == "latentviz"
    # `streamlit run` imports streamlit before it runs app.py: that must leave torch and
    # the OpenMP runtime unloaded, so the defaults still apply.
    out = subprocess.run([sys.executable, "-c", "import sys, streamlit, streamlit.web.bootstrap; "
                          "print('torch' in sys.modules, 'libgomp' in open('/proc/self/maps').read())"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr[-2000:]


SUBNORMALS_LEFT = (
    # a product large enough that each of the two OpenMP threads computes a share
    "x = torch.full((1 << 22,), 1e-39); left = lambda: int(((x * 1.5) != 0).sum()); ")


def probe_floats(code: str) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_training_flushes_subnormal_floats_to_zero_in_every_cpu_thread():
    """A trained TreeVAE ran at half speed on subnormal gradients. Inside training every
    thread flushes them (the OpenMP workers copy the mode when they start, so latentviz's
    import starts them flushing); outside it the importing thread keeps IEEE arithmetic,
    Python's own floats included."""
    if platform.machine() not in ("x86_64", "AMD64", "i686"):
        pytest.skip("flush-to-zero is an x86 setting in PyTorch")
    plain, late = probe_floats(
        "import json, torch; torch.set_num_threads(2); " + SUBNORMALS_LEFT
        + "a = left(); torch.set_flush_denormal(True); print(json.dumps([a, left()]))")
    assert plain == 1 << 22                    # PyTorch's default keeps them
    assert late > 0, "set after the workers started, it misses theirs"
    ours = probe_floats(
        "import json, sys, latentviz, torch; from latentviz import openmp; "
        "torch.set_num_threads(2); " + SUBNORMALS_LEFT
        + "ieee = sys.float_info.min / 2 != 0\n"
        "with openmp.flushing():\n    inside = left()\n"
        "print(json.dumps([ieee, inside, openmp.flushing_now()]))")
    assert ours == [True, 0, False]
