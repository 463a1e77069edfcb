"""The inference benchmark: the spec's reference algorithm against every engine, in one command.

    .venv/bin/python benchmarks/run.py                 # full run (~10-15 min on 2 cores), prints the table
    .venv/bin/python benchmarks/run.py --json out.json # also keep the raw numbers

It builds (once, cached under --work, default benchmarks/.work) a random full-roster checkpoint in the
official two-file layout, its safetensors conversion, one 1280x720 JPEG, and a 10-second and a 5-minute
1080p H.264 video (GOP 250); exports the ONNX/OpenVINO artefacts and calibrates `auto` through
`mffmoe export` (timed). Every measurement then runs in a fresh process, one after another, so numbers do
not share caches, threads or memory: the reference (`mffmoe.testing.reference.ReferenceDetector`, the way
its host runs it), then each engine through `Detector` (what `mffmoe analyze` and the server use), then
a paired image measurement (the reference and the library's default answering in turn from two loaded
processes, `paired_latency.py`, so that both see the same machine), peak RSS of the real CLI (`mffmoe
analyze one.jpg`), then early exit: the full roster with random weights, and a small roster trained by
`mffmoe train` on a half-real, half-fake task.

Timings on a shared machine are noisy: the table gives medians, and the machine's load is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paired_latency  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("torch", "onnxruntime", "openvino", "auto")
TOL = 1e-4
RSS_WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
               "stderr=subprocess.PIPE, text=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
               "r.returncode); sys.stderr.write(r.stderr[-2000:] if r.returncode else '')")


# --- media ------------------------------------------------------------------------------------------
def make_fast_video(path: Path, seconds: float, fps: int = 25, width: int = 1920, height: int = 1080,
                    gop: int = 250) -> Path:
    """A 1080p H.264 video whose frames all differ (a scrolling texture and a moving block), made fast
    enough for minutes of video (frames are shifted copies, not recomputed)."""
    import av
    import numpy as np

    from mffmoe.testing.media import pattern

    if path.exists():
        return path
    base = pattern(width + 256, height, seed=7)
    n = int(round(seconds * fps))
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "ultrafast", "keyint_min": str(gop), "sc_threshold": "0"}
        for i in range(n):
            off = (i * 3) % 256
            img = np.ascontiguousarray(base[:, off:off + width])
            s = 120
            x, y = (i * 11) % (width - s), (i * 5) % (height - s)
            img[y:y + s, x:x + s] = ((i * 7) % 256, 255 - (i * 3) % 256, 60)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    os.replace(tmp, path)
    return path


def setup(work: Path) -> dict:
    """Checkpoint, safetensors, media and exports, built once and reused."""
    from mffmoe.testing.media import make_image

    work.mkdir(parents=True, exist_ok=True)
    timings: dict = {}
    official = work / "official"
    if not (official / "MFF-MoE-v1.state").exists():
        from mffmoe.testing.checkpoints import default_roster_checkpoint
        t0 = time.perf_counter()
        default_roster_checkpoint(official)
        timings["make_checkpoint_s"] = time.perf_counter() - t0
    st = work / "mffmoe.safetensors"
    if not st.exists():
        run([str(ROOT / ".venv/bin/mffmoe"), "convert", str(official), str(st)], check=True)
    image = work / "image_1280x720.jpg"
    if not image.exists():
        make_image(image, 1280, 720, quality=92)
    t0 = time.perf_counter()
    short = make_fast_video(work / "video_10s_1080p.mp4", 10)
    long = make_fast_video(work / "video_5min_1080p.mp4", 300)
    timings["make_media_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run([str(ROOT / ".venv/bin/mffmoe"), "export", "--format", "all", "-w", str(official)], check=True)
    timings["export_and_calibrate_s"] = time.perf_counter() - t0
    return {"official": str(official), "safetensors": str(st), "image": str(image), "short": str(short),
            "long": str(long), "setup": timings}


def run(cmd: list[str], check: bool = False, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if check and r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def child(task: str, args: dict, timeout: int = 1500) -> dict:
    """Run one measurement in a fresh interpreter; it prints one JSON line prefixed with RESULT."""
    cmd = [sys.executable, __file__, "--child", task, json.dumps(args)]
    r = run(cmd, timeout=timeout)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"child {task} failed ({r.returncode}):\n{r.stderr[-3000:]}")


def peak_rss_mb(cmd: list[str]) -> float:
    r = run([sys.executable, "-c", RSS_WRAPPER, *cmd])
    kb, rc = r.stdout.split()
    if rc != "0":
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr}")
    return int(kb) / 1024


# --- children ---------------------------------------------------------------------------------------
def _median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def child_gemm(args: dict) -> dict:
    import torch
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = min(_median_time(lambda: a @ b, 1)[0] for _ in range(15))
    return {"gflops": 2 * n ** 3 / best / 1e9, "threads": torch.get_num_threads()}


def child_reference(args: dict) -> dict:
    from mffmoe.testing.reference import ReferenceDetector
    t0 = time.perf_counter()
    ref = ReferenceDetector(args["official"])
    load = time.perf_counter() - t0
    ref.score_file(args["image"])  # warm-up
    scores = []
    med, times = _median_time(lambda: scores.append(ref.score_file(args["image"])), args["repeats"])
    out = {"load_s": load, "image_s": med, "image_times": times, "image_score": scores[-1]}
    for key in ("short", "long"):
        t0 = time.perf_counter()
        score, frames = ref.score_video(args[key], n_frames=16)
        out[key] = {"seconds": time.perf_counter() - t0, "score": score, "frame_scores": frames}
    return out


def child_engine(args: dict) -> dict:
    from mffmoe.inference.detector import Detector
    t0 = time.perf_counter()
    det = Detector.from_dir(args["weights"], engine=args["engine"], device="cpu", batch_size=16)
    load = time.perf_counter() - t0
    eng = det.engine
    out = {"load_s": load, "engine": eng.name, "reason": eng.auto_reason or "",
           "describe": eng.describe()}
    det.analyze(args["image"])  # warm-up
    results = []
    med, times = _median_time(lambda: results.append(det.analyze(args["image"])), args["repeats"])
    out.update(image_s=med, image_times=times, image_score=results[-1].score)
    if args.get("videos", True):
        for key in ("short", "long"):
            t0 = time.perf_counter()
            r = det.analyze(args[key], frames=16)
            out[key] = {"seconds": time.perf_counter() - t0, "score": r.score,
                        "frame_scores": [f.score for f in r.frame_predictions]}
    return out


def child_load(args: dict) -> dict:
    """Load time of weights + engine (imports excluded), torch engine."""
    import timm  # noqa: F401
    import torch  # noqa: F401  (imports are not part of the load time)

    from mffmoe.inference.detector import Detector
    t0 = time.perf_counter()
    Detector.from_dir(args["weights"], engine="torch", device="cpu")
    return {"load_s": time.perf_counter() - t0}


def _early_exit_summary(full, early, paths: list) -> dict:
    """Run every image through the full ensemble and the early-exit detector (same engine) and compare."""
    import numpy as np

    from mffmoe.engine.costs import roster_gflops

    costs = roster_gflops(full.info.roster, full.info.input_size)
    rows = []
    for p in paths:
        t0 = time.perf_counter()
        a = full.analyze(p)
        t1 = time.perf_counter()
        b = early.analyze(p)
        t2 = time.perf_counter()
        n_run = b.experts_run or len(costs)
        ran_cost = sum(sorted(costs)[:n_run])
        rows.append({"full_s": t1 - t0, "early_s": t2 - t1, "experts_run": n_run,
                     "flop_saving": 1 - ran_cost / sum(costs), "same_label": a.prediction == b.prediction,
                     "score": a.score, "interval": b.score_interval,
                     "inside": b.score_interval[0] - 1e-12 <= a.score <= b.score_interval[1] + 1e-12})
    return {
        "images": len(rows), "experts": len(costs),
        "mean_experts_run": float(np.mean([r["experts_run"] for r in rows])),
        "mean_flop_saving": float(np.mean([r["flop_saving"] for r in rows])),
        "time_saving": 1 - sum(r["early_s"] for r in rows) / sum(r["full_s"] for r in rows),
        "labels_equal": all(r["same_label"] for r in rows), "scores_inside": all(r["inside"] for r in rows),
        "fake_fraction": float(np.mean([r["score"] >= 0.5 for r in rows])), "rows": rows}


def child_early_exit(args: dict) -> dict:
    """Early exit vs the full ensemble on an image set, full roster with random weights, heads as they are
    and sharpened so that the experts are confident (random weights alone give P(fake) ~ 0.5 everywhere,
    where nothing can exit early)."""
    import torch

    from mffmoe.inference.detector import Detector
    from mffmoe.testing.media import make_image

    work = Path(args["work"]) / "mixed"
    paths = []
    for i in range(args["n_images"]):
        w, h = [(1280, 720), (640, 480), (512, 512), (800, 1200)][i % 4]
        paths.append(make_image(work / f"img{i}.png", w, h, seed=100 + i))
    out: dict = {}
    for sharpen in args["sharpen"]:
        full = Detector.from_dir(args["official"], engine="torch", device="cpu", batch_size=1)
        if sharpen != 1:
            with torch.no_grad():
                for expert in full.engine.model.experts:
                    head = expert.baseline_extractor.get_classifier()
                    head.weight.mul_(sharpen)
                    head.bias.mul_(sharpen)
        early = Detector(full.engine, full.info, batch_size=1, early_exit=True)
        out[f"random heads x{sharpen}" if sharpen != 1 else "random heads"] = _early_exit_summary(full, early, paths)
        del full, early
    return out


#: A seven-expert roster of small timm models with different costs, for the trained early-exit run.
TRAINED_ROSTER = ("efficientnet_b0", "convnextv2_atto", "test_efficientnet", "test_convnext",
                  "efficientnet_b0", "convnextv2_atto", "test_efficientnet")


def child_early_exit_trained(args: dict) -> dict:
    """Early exit where the experts have learned something: seven small experts trained with `mffmoe train`
    on the planted-pattern task (mffmoe.testing.planted), then scored on a held-out half-real, half-fake set
    made with a fainter pattern (so that some images are hard)."""
    from mffmoe.inference.detector import Detector
    from mffmoe.testing.planted import make_planted_dataset

    work = Path(args["work"]) / "early_exit_trained"
    run_dir = work / "run"
    size = args["input_size"]
    if not (run_dir / "MFF-MoE-v1.state").exists():
        data = make_planted_dataset(work / "data", 96, 96, size=size, seed=0)
        run([str(ROOT / ".venv/bin/mffmoe"), "train", "--data", str(data), "--out", str(run_dir),
             "--experts", ",".join(TRAINED_ROSTER), "--input-size", str(size), "--epochs", "6",
             "--batch-size", "16", "--lr", "1e-3", "--workers", "0", "--val-split", "0.2"], check=True)
    test = work / "test"
    if not test.exists():
        make_planted_dataset(test, 32, 32, size=size, amplitude=args["amplitude"], seed=11)
    paths = sorted(test.rglob("*.png"))
    full = Detector.from_dir(str(run_dir), engine="torch", device="cpu", batch_size=1)
    early = Detector(full.engine, full.info, batch_size=1, early_exit=True)
    truth = ["FAKE" if p.parent.name == "fake" else "REAL" for p in paths]
    out = _early_exit_summary(full, early, paths)
    labels = ["FAKE" if r["score"] >= 0.5 else "REAL" for r in out["rows"]]
    out["accuracy"] = sum(t == x for t, x in zip(truth, labels, strict=True)) / len(paths)
    out["roster"] = list(TRAINED_ROSTER)
    return {"trained small roster": out}


CHILDREN = {"gemm": child_gemm, "reference": child_reference, "engine": child_engine, "load": child_load,
            "early_exit": child_early_exit, "early_exit_trained": child_early_exit_trained}


# --- report -----------------------------------------------------------------------------------------
def gflop_per_image() -> float:
    from mffmoe.config import DEFAULT_INPUT_SIZE, DEFAULT_ROSTER
    from mffmoe.engine.costs import roster_gflops
    return sum(roster_gflops(DEFAULT_ROSTER, DEFAULT_INPUT_SIZE))


def max_diff(a: dict, ref: dict) -> float:
    d = [abs(a["image_score"] - ref["image_score"])]
    for key in ("short", "long"):
        if key in a:
            d.append(abs(a[key]["score"] - ref[key]["score"]))
            d += [abs(x - y) for x, y in zip(a[key]["frame_scores"], ref[key]["frame_scores"], strict=True)]
    return max(d)


def machine_line() -> str:
    from mffmoe.engine.auto import machine
    m = machine()
    load = os.getloadavg()
    return (f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}; load average at the end "
            f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")


def table(res: dict) -> str:
    ref = res["reference"]
    gf = res["gflop_per_image"]
    peak = res["gemm"]["gflops"]
    lines = ["| run | load (s) | image b1 (s) | x ref | GFLOP/s | % GEMM peak | 16 fr 10 s (s) | 16 fr 5 min (s) "
             "| 5min / 10s | x ref (5 min) | max abs score diff |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def row(name: str, r: dict, diff: str) -> str:
        g = gf / r["image_s"]
        s, l_ = r["short"]["seconds"], r["long"]["seconds"]
        return (f"| {name} | {r['load_s']:.2f} | {r['image_s']:.3f} | {ref['image_s'] / r['image_s']:.2f} | "
                f"{g:.1f} | {100 * g / peak:.0f}% | {s:.2f} | {l_:.2f} | {l_ / s:.2f} | "
                f"{ref['long']['seconds'] / l_:.2f} | {diff} |")

    lines.append(row("reference (spec algorithm)", ref, "-"))
    for name in ENGINES:
        if name in res["engines"]:
            r = res["engines"][name]
            label = f"auto -> {r['engine']}" if name == "auto" else name
            d = max_diff(r, ref)
            lines.append(row(label, r, f"{d:.1e}" + ("" if d <= TOL else " (over 1e-4!)")))
    if "paired" in res:
        p = res["paired"]
        lib = p["library"]
        lines += ["", "| image b1, paired (two processes answering in turn, `paired_latency.py`) | reference (s) | "
                  "engine (s) | x ref (ratio of medians) | median of per-round ratios | max abs score diff |",
                  "|---|---|---|---|---|---|",
                  f"| `Detector.from_dir` default | {p['reference_s']:.3f} | {lib['median_s']:.3f} | "
                  f"{p['reference_s'] / lib['median_s']:.2f} | {lib['ratio']:.2f} | {lib['max_abs_diff']:.1e} |"]
    m = res["memory"]
    lines += ["", "| peak RSS (MB) | value |", "|---|---|",
              f"| reference: load both files + one image | {m['reference_mb']:.0f} |",
              f"| `mffmoe analyze one.jpg`, official two files | {m['cli_official_mb']:.0f} |",
              f"| `mffmoe analyze one.jpg`, converted safetensors | {m['cli_safetensors_mb']:.0f} |",
              "", "| load time, torch engine (s, imports excluded) | value |", "|---|---|",
              f"| official two files | {res['load']['official']:.2f} |",
              f"| converted safetensors | {res['load']['safetensors']:.2f} |"]
    if "early_exit" in res:
        lines += ["", "| early exit | images | FAKE share | experts run (of 7) | FLOP saving "
                  "| time saving | labels equal | full score inside interval |", "|---|---|---|---|---|---|---|---|"]
        for name, e in res["early_exit"].items():
            lines.append(f"| {name} | {e['images']} | {100 * e['fake_fraction']:.0f}% | {e['mean_experts_run']:.2f} "
                         f"| {100 * e['mean_flop_saving']:.0f}% | {100 * e['time_saving']:.0f}% | "
                         f"{e['labels_equal']} | {e['scores_inside']} |")
    lines += ["", f"GEMM peak (2048^3 fp32, {res['gemm']['threads']} threads): {peak:.1f} GFLOP/s; "
              f"model: {gf:.1f} GFLOP per 512x512 image (7 experts)", f"Machine: {res['machine']}"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--repeats", type=int, default=5, help="timed batch-1 image runs per engine (median)")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument("--no-early-exit", action="store_true")
    ap.add_argument("--only", choices=["early_exit_trained"], help="run one measurement alone and print its JSON "
                    "(for trying a change; the table needs the full run)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        task, args = a.child
        print("RESULT " + json.dumps(CHILDREN[task](json.loads(args))), flush=True)
        return
    t_start = time.perf_counter()
    if a.only == "early_exit_trained":
        out = child("early_exit_trained", {"work": str(a.work), "input_size": 96, "amplitude": 7.0})
        print(json.dumps({k: {f: v for f, v in e.items() if f != "rows"} for k, e in out.items()}, indent=1))
        return
    paths = setup(a.work)
    log = lambda m: print(f"[{time.perf_counter() - t_start:6.0f} s] {m}", file=sys.stderr, flush=True)  # noqa
    log(f"setup done {paths['setup']}")
    res: dict = {"paths": paths, "gflop_per_image": gflop_per_image()}
    res["gemm"] = child("gemm", {})
    log(f"GEMM {res['gemm']['gflops']:.1f} GFLOP/s")
    common = {k: paths[k] for k in ("official", "image", "short", "long")} | {"repeats": a.repeats}
    res["reference"] = child("reference", common)
    log(f"reference image {res['reference']['image_s']:.2f} s")
    res["engines"] = {}
    for name in a.engines.split(","):
        res["engines"][name] = child("engine", common | {"engine": name, "weights": paths["official"]})
        log(f"{name}: image {res['engines'][name]['image_s']:.3f} s")
    res["paired"] = paired_latency.measure(paths["official"], paths["image"], 9, subjects=("library",))
    log(f"paired: reference {res['paired']['reference_s']:.3f} s, library {res['paired']['library']['median_s']:.3f} s")
    mffmoe = str(ROOT / ".venv/bin/mffmoe")
    res["memory"] = {
        "reference_mb": peak_rss_mb([sys.executable, "-c", "import sys; from mffmoe.testing.reference import "
                                     "ReferenceDetector as R; R(sys.argv[1]).score_file(sys.argv[2])",
                                     paths["official"], paths["image"]]),
        "cli_official_mb": peak_rss_mb([mffmoe, "analyze", paths["image"], "-w", paths["official"]]),
        "cli_safetensors_mb": peak_rss_mb([mffmoe, "analyze", paths["image"], "-w", paths["safetensors"]]),
    }
    log(f"memory {res['memory']}")
    res["load"] = {k: statistics.median(child("load", {"weights": paths[k]})["load_s"] for _ in range(3))
                   for k in ("official", "safetensors")}
    if not a.no_early_exit:
        res["early_exit"] = child("early_exit", {"official": paths["official"], "work": str(a.work),
                                                 "n_images": 12, "sharpen": [1, 200]})
        res["early_exit"].update(child("early_exit_trained", {"work": str(a.work), "input_size": 96,
                                                              "amplitude": 7.0}))
    res["machine"] = machine_line()
    res["total_s"] = time.perf_counter() - t_start
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    print(table(res))
    print(f"\nbenchmark took {res['total_s'] / 60:.1f} min")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
