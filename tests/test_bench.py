"""``python -m latentviz bench --quick`` runs and prints every section.

Benchmarks never assert on wall time (the machine is shared); the figures themselves are
in docs/PERFORMANCE.md. This only checks that each section runs (or says why it skipped)
and that the JSON it writes holds the same sections.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from latentviz.bench import SECTIONS

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_prints_every_section(data_root, tmp_path):
    out = tmp_path / "bench.json"
    # A fresh interpreter, as the command runs; passive OpenMP threads keep it quick on a
    # shared machine (spinning ones can make it ten times slower).
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "latentviz", "bench", "--quick",
                           "--data-dir", str(data_root), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    printed = proc.stdout
    assert proc.returncode == 0, f"bench --quick failed:\n{printed[-3000:]}\n{proc.stderr[-3000:]}"
    for name in SECTIONS:
        assert f"== {name}:" in printed, f"section {name} not printed:\n{printed[-3000:]}"
    assert "what" in printed and "ratio" in printed and "met?" in printed
    result = json.loads(out.read_text())
    assert set(result["sections"]) == set(SECTIONS)
    for name, section in result["sections"].items():
        assert section["rows"] or section["skipped"], f"{name}: neither figures nor a reason"
        assert "error" not in section, f"{name}: {section.get('error')}"
    # The training section compares against the reference loop on MNIST (present here).
    train = result["sections"]["train"]["rows"]
    assert any(r["reference"] and r["ratio"] for r in train), train
