"""scripts/gpu_check.py runs end to end on the CPU with the tiny model (--cpu --quick)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_gpu_check_runs_on_cpu_quick_and_prints_one_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu", "--quick", "--out",
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| check | figure | value |" in done.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    for run in results["precision"]:         # bf16 autocast and float32: float32 numbers either way
        assert run["probe_precision"] == "float32"
        assert run["max_error_before"] < 1e-4 and run["max_error_after"] < 1e-4 and run["max_error_delta"] < 1e-4
    assert [run["precision"] for run in results["precision"]] == ["bf16 autocast", "float32"]
    assert results["protocol"]["questions"] == 4
    assert results["overhead"]["ratio"] > 0
