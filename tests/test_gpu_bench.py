"""benchmarks/gpu.py runs on the CPU at a tiny size and writes the rows it should: the GPU benchmark is only
run where a GPU is lent, so this is what keeps it from rotting in between."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCHES, PRECISIONS, FRAMES = (1, 2), ("fp32", "bf16"), 4


def test_gpu_benchmark_tiny_cpu_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(ROOT / "benchmarks/gpu.py"), "--device", "cpu", "--roster",
           "test_efficientnet,test_convnext", "--size", "64", "--batches", ",".join(map(str, BATCHES)),
           "--precisions", ",".join(PRECISIONS), "--modes", "eager,graphs", "--frames", str(FRAMES),
           "--video-size", "96x64", "--min-time", "0.02", "--repeats", "1", "--video-repeats", "1",
           "--work", str(tmp_path / "work"), "--json", str(out)]
    # one thread: the test machine has two cores, often shared; OpenMP spinning on a busy core is slow
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())

    rows = {(r["precision"], r["mode"], r["batch"]): r for r in res["rows"]}
    assert set(rows) == {(p, m, b) for p in PRECISIONS for m in ("eager", "graphs") for b in BATCHES}
    for (_, mode, _), r in rows.items():
        if mode == "graphs":  # CUDA graphs on the CPU: reported, not measured
            assert r["status"] == "n/a" and r["images_per_s"] is None
            continue
        assert r["status"] == "ok", r
        assert r["images_per_s"] > 0 and r["seconds_per_batch"] > 0
        assert math.isfinite(r["max_abs_diff"]) and 0 <= r["max_abs_diff"] < 1
        assert r["peak_mem_mb"] is None  # no GPU memory on the CPU
    assert rows["fp32", "eager", 1]["max_abs_diff"] == 0.0  # the reference itself
    assert rows["fp32", "eager", 2]["max_abs_diff"] < 1e-5  # batching changes fp32 by rounding only
    assert all(rows["bf16", "eager", b]["max_abs_diff"] > 0 for b in BATCHES)  # bf16 really ran

    assert res["reference"]["batch"] == 1 and len(res["reference"]["scores"]) == len(res["reference"]["images"])
    assert {(b["precision"], b["batch"]) for b in res["best"]} == {(p, b) for p in PRECISIONS for b in BATCHES}
    assert all(b["mode"] == "eager" for b in res["best"])

    video = res["video"]
    assert video["frames_analyzed"] == FRAMES and video["frames_failed"] == 0
    assert video["seconds"] > 0 and video["frames_per_s"] > 0 and 0 <= video["score"] <= 1
    assert video["autocast"] is None  # the CPU runs the video in fp32

    targets = {t["name"]: t for t in res["targets"]}
    assert len(targets) == 2 and all(t["met"] is None for t in targets.values())  # tiny run: not the targets'
    assert "| precision | mode | batch |" in proc.stdout and "| target |" in proc.stdout
