"""Scan throughput: files/s of `mffmoe scan` on one machine vs on a local Ray instance with 2 replicas,
on the same generated collection, in one run (plus `Detector.analyze_many`, the `mffmoe analyze` path,
for reference).

    .venv/bin/python benchmarks/scan_bench.py                      # small roster at 224, 2 replicas
    .venv/bin/python benchmarks/scan_bench.py --roster tiny --input-size 64 --json out.json

Every mode scans the same files into a fresh RESULTS. files/s = files analyzed / seconds of the analysis
phase (worker and replica start-up included; Ray's own start-up and hashing are timed apart). "start-up"
is the analysis phase until the first row, "after start-up" the rate from the first row to the last. The weights
are random (same shapes and cost as trained ones); the collection holds JPEG/PNG/WebP images, H.264
videos, duplicates and broken files, as `mffmoe.testing.collections.make_collection` makes them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROSTERS = {
    "tiny": ("test_efficientnet", "test_convnext"),
    "small": ("efficientnet_b0", "convnextv2_atto"),
}


def _analyze_many(weights: Path, paths: list[str], args) -> dict:
    from mffmoe.inference.detector import Detector

    detector = Detector.from_dir(weights, frames=args.frames, batch_size=args.batch_size)
    start = time.perf_counter()
    n = sum(1 for _ in detector.analyze_many(paths))
    seconds = time.perf_counter() - start
    return {"mode": "analyze_many (1 process, decode threads)", "files": n, "seconds": seconds,
            "files_per_second": n / seconds, "detail": "no hashing, no dedup, no results store"}


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def _scan(source: Path, out: Path, weights: Path, args, mode: str, **kw) -> dict:
    from mffmoe.scan import ScanOptions, run_scan

    opts = ScanOptions(source=source, out=out, weights=weights, frames=args.frames, batch_size=args.batch_size,
                       **kw)
    times: list[float] = []
    def on_row(row: dict) -> None:
        if row["duplicate_of"] is None:  # analyzed files only
            times.append(time.perf_counter())

    s = run_scan(opts, progress=False, on_row=on_row)
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")
    return {"mode": mode, "files": s.analyzed, "duplicates": s.duplicates, "seconds": s.scan_seconds,
            "total_seconds": s.seconds, "files_per_second": s.files_per_second, "steady_files_per_second": steady,
            "start_seconds": s.scan_seconds - (times[-1] - times[0]) if times else float("nan"),
            "detail": s.runner}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--roster", choices=sorted(ROSTERS), default="small")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--frames", type=int, default=8, help="frames sampled per video")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="local decode processes (default: cores - 1)")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--ray-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray instance")
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = p.parse_args()

    import torch

    from mffmoe.testing.checkpoints import make_random_checkpoint
    from mffmoe.testing.collections import make_collection

    rows = []
    with tempfile.TemporaryDirectory(prefix="mffmoe-scan-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        made = make_collection(tmp / "media", images=args.images, videos=args.videos, size=(640, 480),
                               video_size=(320, 240), video_seconds=2.0, fps=25)
        weights = make_random_checkpoint(tmp / "weights", ROSTERS[args.roster], input_size=args.input_size)
        n_files = sum(len(v) for k, v in made.items() if k != "hidden")
        print(f"collection: {n_files} files ({args.images} images 640x480-ish, {args.videos} videos 2 s 320x240, "
              f"{len(made['duplicates'])} duplicates, {len(made['broken'])} broken), made in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)

        from mffmoe.scan.sources import list_inputs
        rows.append(_analyze_many(weights, list_inputs(tmp / "media"), args))
        rows.append(_scan(tmp / "media", tmp / "local.parquet", weights, args, "scan, one machine",
                          workers=args.workers))

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        try:
            row = _scan(tmp / "media", tmp / "ray.parquet", weights, args, f"scan --ray, {args.replicas} replicas",
                        ray="", replicas=args.replicas)
        finally:
            ray.shutdown()
        row["ray_start_seconds"] = ray_start
        rows.append(row)

    env = {"roster": list(ROSTERS[args.roster]), "input_size": args.input_size, "frames": args.frames,
           "batch_size": args.batch_size, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__}
    print(f"\n{n_files} files; roster {env['roster']} at {args.input_size}px, {args.frames} frames/video, "
          f"batch {args.batch_size}, {env['cpus']} CPU(s)\n")
    print("| mode | files analyzed | seconds | files/s | start-up s | files/s after start-up | runner |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        extra = f" (+ {r['ray_start_seconds']:.1f} s Ray start)" if "ray_start_seconds" in r else ""
        print(f"| {r['mode']} | {r['files']} | {r['seconds']:.2f}{extra} | {r['files_per_second']:.2f} | "
              f"{_fmt(r.get('start_seconds'), '.1f')} | {_fmt(r.get('steady_files_per_second'))} | {r['detail']} |")
    if args.json:
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
