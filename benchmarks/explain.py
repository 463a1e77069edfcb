"""Issue 15's cost target in one command: explaining one image vs one ensemble pass (full roster, CPU).

    .venv/bin/python benchmarks/explain.py [--weights DIR] [--work DIR] [--repeats 3] [--json explain.json]

Without --weights, a random full-roster checkpoint in the official two-file layout is built once under
--work (as `run.py` does); the default engine (`auto`: OpenVINO, graphs prepared on first use) and the
torch engine score a 1280x720 JPEG in frame mode. In the same process, so the ratios are of this run:

- one ensemble pass: `Detector.analyze(image)` (decode + preprocess + the seven experts), median of
  --repeats, on the default engine and on the torch engine;
- Grad-CAM (`explain_result(..., method="gradcam")`): on the default engine's detector (the first call
  also loads the torch model from the weights: timed apart) and on the torch engine's (its model reused);
- occlusion (`method="occlusion"`, default 6x6 grid, 2x2 window: 26 inputs) through the default engine.

Target: an explanation costs at most 3x one ensemble pass.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_X = 3.0


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def hwm_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, help="a full-roster weights folder (default: random, built under --work)")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--occlusion-repeats", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from mffmoe.explain import explain_result
    from mffmoe.inference.detector import Detector
    from mffmoe.testing.media import make_image

    a.work.mkdir(parents=True, exist_ok=True)
    weights = a.weights
    if weights is None:
        weights = a.work / "official"
        if not (weights / "MFF-MoE-v1.state").exists():
            from mffmoe.testing.checkpoints import default_roster_checkpoint
            default_roster_checkpoint(weights)
    image = a.work / "image_1280x720.jpg"
    if not image.exists():
        make_image(image, 1280, 720, quality=92)

    res: dict = {"weights": str(weights), "image": str(image), "cores": os.cpu_count(), "repeats": a.repeats}
    t0 = time.perf_counter()
    det = Detector.from_dir(weights, crop="frame")               # the default engine (auto)
    res["default_engine"] = det.engine.name
    res["default_load_s"] = time.perf_counter() - t0
    result = det.analyze(image)                                  # warm-up
    res["pass_s"], res["pass_times"] = median_time(lambda: det.analyze(image), a.repeats)

    t0 = time.perf_counter()
    explain_result(det, image, result, method="gradcam")          # loads the torch model once
    res["gradcam_first_s"] = time.perf_counter() - t0
    res["gradcam_s"], res["gradcam_times"] = median_time(
        lambda: explain_result(det, image, result, method="gradcam"), a.repeats)
    res["occlusion_s"], res["occlusion_times"] = median_time(
        lambda: explain_result(det, image, result, method="occlusion"), a.occlusion_repeats)

    t0 = time.perf_counter()
    ref = Detector.from_dir(weights, engine="torch", crop="frame")
    res["torch_load_s"] = time.perf_counter() - t0
    torch_result = ref.analyze(image)
    res["torch_pass_s"], res["torch_pass_times"] = median_time(lambda: ref.analyze(image), a.repeats)
    explain_result(ref, image, torch_result, method="gradcam")
    res["torch_gradcam_s"], res["torch_gradcam_times"] = median_time(
        lambda: explain_result(ref, image, torch_result, method="gradcam"), a.repeats)
    res["peak_rss_mb"] = hwm_mb()

    p, tp = res["pass_s"], res["torch_pass_s"]
    rows = [
        (f"one ensemble pass ({res['default_engine']}, default)", res["pass_s"], p, tp),
        ("one ensemble pass (torch)", tp, p, tp),
        (f"Grad-CAM, {res['default_engine']} detector (torch model loaded once, first call)",
         res["gradcam_first_s"], p, tp),
        (f"Grad-CAM, {res['default_engine']} detector", res["gradcam_s"], p, tp),
        ("Grad-CAM, torch detector (engine's model)", res["torch_gradcam_s"], p, tp),
        (f"occlusion 6x6/2x2 (26 inputs), {res['default_engine']} detector", res["occlusion_s"], p, tp),
    ]
    print(f"one 1280x720 image, full roster, frame mode, {res['cores']} cores; median of {a.repeats}")
    print(f"{'':72s} {'seconds':>8s} {'x default pass':>15s} {'x torch pass':>13s}")
    for name, s, base, tbase in rows:
        print(f"{name:72s} {s:8.2f} {s / base:15.2f} {s / tbase:13.2f}")
    ratio = res["gradcam_s"] / p
    res["gradcam_x_default_pass"], res["gradcam_x_torch_pass"] = ratio, res["gradcam_s"] / tp
    res["torch_gradcam_x_torch_pass"] = res["torch_gradcam_s"] / tp
    res["occlusion_x_default_pass"] = res["occlusion_s"] / p
    print(f"target: explanation <= {TARGET_X}x one ensemble pass: Grad-CAM {ratio:.2f}x the default pass "
          f"({'met' if ratio <= TARGET_X else 'NOT met'}), {res['gradcam_x_torch_pass']:.2f}x the torch pass; "
          f"occlusion {res['occlusion_x_default_pass']:.1f}x (not met by design: 26 passes)")
    print(f"peak RSS {res['peak_rss_mb']:.0f} MB (both detectors and the torch model in one process)")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
