"""Reduced precision on the CPU (issue 14): fp32, bf16 and int8 OpenVINO graphs of every expert, in one command.

    .venv/bin/python benchmarks/precision.py                    # random full roster (built once, cached)
    .venv/bin/python benchmarks/precision.py --weights DIR      # your weights (official layout)
    .venv/bin/python benchmarks/precision.py --json out.json    # also keep the raw numbers

It uses the cached fp32 OpenVINO IRs of the weights (`mffmoe export --format openvino`, run here if they
are missing), quantises each expert to int8 (`mffmoe.engine.precision.quantize_openvino_ir`, calibrated on
generated images; cached under --work), and in a fresh process compiles every expert at each precision
and reports, per precision:

- batch-1 latency per image (median; the spec's preprocessing of a decoded 1280x720 image, then the seven
  experts one after another on all cores, as the openvino engine runs them), against fp32 OpenVINO and
  against the reference algorithm (`mffmoe.testing.reference.ReferenceDetector`) measured in the same
  run, in processes of its own before and after the engines (the faster median counts). The precisions
  run alternately in one process (A, B, C, ... A, B, C): this VM's speed drifts by 10-20% over minutes,
  which separate measurements would turn into ratio noise;
- max |ensemble P(fake) difference| against fp32 and label agreement (FAKE iff >= 0.5) over a fixed set of
  natural-looking images: generated frames (`media.samples`, other seeds than the calibration set's),
  scikit-image's photographs and their mirror images, and upscaled LFW faces (`skimage.data.lfw_subset`);
- the same after sharpening (`--sharpen S`): each expert's logit replaced by S (logit - median) / std, with
  median and std taken from fp32's logits over the set and applied identically to every precision. That
  is an exact affine change of the expert's final linear layer, so it is the score of another valid
  network, one whose experts spread their scores around the threshold as a trained detector does on
  mixed data. Random heads do not: their logits barely vary between images (a spread of 0.1-0.9 on the
  random checkpoint), so few scores lie near the threshold (plain labels: a weak test), while the
  sharpened view turns small absolute errors into large ones (harsh);
- per expert: max |P(fake) difference| and the logit error relative to fp32's logit spread
  (RMS(logit - logit_fp32) / std(logit_fp32)), the measure that does not depend on the head's scale.

Targets (issue 14): 4x the reference per image, label agreement >= 99%, max |difference| <= 0.01.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Name -> (precision for `precision.openvino_config`, int8 graph?). "int8+bf16" runs the int8 IR with
#: the bf16 hint for the ops that are not quantised.
VARIANTS: dict[str, tuple[str, bool]] = {"fp32": ("fp32", False), "bf16": ("bf16", False),
                                         "int8": ("int8", True), "int8+bf16": ("bf16", True)}
TARGET_SPEEDUP = 4.0
#: Natural-looking images (smooth frames and dead leaves, `media.samples.natural_batch`) the random
#: checkpoint's BatchNorm statistics are measured on; none is in the evaluation set.
BN_IMAGES = 96
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "stereo_motorcycle", "camera", "moon", "coins", "grass", "gravel", "brick", "clock")


# --- setup (parent process) ------------------------------------------------------------------------
def setup(work: Path, weights: Path | None, calibration: int) -> dict[str, Any]:
    """Weights (a random full roster with measured BatchNorm statistics unless --weights), the fp32 IRs
    (exported through the CLI when missing) and the int8 IRs (quantised here when missing)."""
    from mffmoe.engine.cache import find_artifacts
    from mffmoe.engine.export import EXPORT_VERSION
    from mffmoe.model.checkpoint import load_weights

    timings: dict[str, float] = {}
    if weights is None:
        weights = work / "official"
        if not (weights / "MFF-MoE-v1.state").exists():
            from mffmoe.config import DEFAULT_INPUT_SIZE, DEFAULT_ROSTER
            from mffmoe.testing.checkpoints import make_random_checkpoint
            t0 = time.perf_counter()
            make_random_checkpoint(weights, DEFAULT_ROSTER, DEFAULT_INPUT_SIZE, measured_bn=True,
                                   bn_images=BN_IMAGES)
            timings["make_checkpoint_s"] = time.perf_counter() - t0
    _, info = load_weights(weights)
    found = find_artifacts(info, "openvino", EXPORT_VERSION["openvino"])
    if found is None:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mffmoe.cli", "export", "--format", "openvino", "--no-calibrate",
                            "-w", str(weights)], text=True, capture_output=True)
        if r.returncode:
            raise SystemExit(f"mffmoe export failed ({r.returncode}):\n{r.stderr[-3000:]}")
        timings["export_s"] = time.perf_counter() - t0
        found = find_artifacts(info, "openvino", EXPORT_VERSION["openvino"])
        if found is None:
            raise SystemExit("mffmoe export ran but no OpenVINO artefacts were found")
    fp32_dir, manifest = found
    xmls = [f for f in manifest["files"] if f.endswith(".xml")]
    int8_dir = work / f"int8-{info.fingerprint()}-c{calibration}"
    quant = _quantize_all(fp32_dir, int8_dir, xmls, info.input_size, calibration)
    return {"weights": str(weights), "fingerprint": info.fingerprint(), "roster": list(info.roster),
            "input_size": info.input_size, "fp32_dir": str(fp32_dir), "int8_dir": str(int8_dir), "files": xmls,
            "setup": timings, "quantize": quant}


def _quantize_all(fp32_dir: Path, int8_dir: Path, xmls: list[str], size: int, n: int) -> dict[str, Any]:
    from mffmoe.engine.precision import QUANTIZATION_VERSION, calibration_images, quantize_openvino_ir

    record = int8_dir / "quantize.json"
    if record.exists():
        return dict(json.loads(record.read_text()), cached=True)
    images = calibration_images(size, n)
    seconds = []
    for f in xmls:
        t0 = time.perf_counter()
        quantize_openvino_ir(fp32_dir / f, int8_dir / f, images)
        seconds.append(time.perf_counter() - t0)
        print(f"  quantised {f} in {seconds[-1]:.1f} s", file=sys.stderr, flush=True)
    out = {"version": QUANTIZATION_VERSION, "calibration_images": n, "seconds_per_expert": seconds,
           "seconds": sum(seconds)}
    record.write_text(json.dumps(out, indent=2))
    return dict(out, cached=False)


# --- the measurement (child process) ----------------------------------------------------------------
def evaluation_images() -> list[tuple[str, Any]]:
    """The fixed set: 40 generated frames, 15 photographs and their mirror images, 60 upscaled faces."""
    import numpy as np
    import skimage.data
    from PIL import Image

    from mffmoe.media.samples import SHAPES, sample_frame

    images: list[tuple[str, Any]] = []
    for i in range(40):
        w, h = SHAPES[i % len(SHAPES)]
        images.append((f"sample-{i}", sample_frame(w, h, t=i, seed=i)))
    for name in PHOTOS:
        loaded = getattr(skimage.data, name)()
        a = np.asarray(loaded[0] if isinstance(loaded, tuple) else loaded)  # stereo_motorcycle: (left, right, ..)
        a = np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a[..., :3]
        a = np.ascontiguousarray(a.astype(np.uint8))
        images += [(name, a), (f"{name}-mirrored", np.ascontiguousarray(a[:, ::-1]))]
    faces = skimage.data.lfw_subset()
    for i in range(60):
        g = Image.fromarray((faces[i] * 255).round().astype(np.uint8)).resize((250, 250), Image.BICUBIC)
        images.append((f"lfw-{i}", np.repeat(np.asarray(g)[..., None], 3, axis=-1)))
    return images


def _compile(core: Any, xml: Path, size: int, precision: str, threads: int) -> Any:
    """As the openvino engine compiles an expert (static [1, 3, S, S], latency hint, one stream), plus the
    precision's properties; the logits (input of the final softmax) are a second output."""
    from mffmoe.engine.precision import openvino_config

    graph = core.read_model(str(xml))
    graph.reshape([1, 3, size, size])
    softmax = next(op for op in graph.get_ordered_ops() if op.get_type_name() == "Softmax")
    graph.add_outputs([softmax.input_value(0)])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
              "ENABLE_CPU_PINNING": False, **openvino_config(precision)}
    return core.compile_model(graph, "CPU", config)


def _timing_frame() -> Any:
    from mffmoe.media.samples import sample_frame
    return sample_frame(1280, 720, t=3, seed=123)


def child_reference(args: dict[str, Any]) -> dict[str, Any]:
    """The spec's algorithm as its host runs it (batch 1, per-forward EMA swap), alone in its process, as
    benchmarks/run.py measures it."""
    from PIL import Image

    from mffmoe.testing.reference import ReferenceDetector

    t0 = time.perf_counter()
    ref = ReferenceDetector(args["weights"], roster=args["roster"], input_size=args["input_size"])
    load = time.perf_counter() - t0
    pil = Image.fromarray(_timing_frame())
    score = ref.score_image(pil)  # warm-up
    times = []
    for _ in range(args["repeats"]):
        t0 = time.perf_counter()
        ref.score_image(pil)
        times.append(time.perf_counter() - t0)
    return {"load_s": load, "median_s": statistics.median(times), "times": times, "score": score}


def child_measure(args: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import openvino as ov

    from mffmoe.media.preprocess import preprocess

    size, threads = args["input_size"], args["threads"]
    core = ov.Core()
    images = evaluation_images()
    x = np.stack([np.asarray(preprocess(a, size), dtype=np.float32) for _, a in images])
    out: dict[str, Any] = {"images": [n for n, _ in images], "variants": {}}
    requests: dict[str, list[Any]] = {}
    for name in args["variants"]:
        precision, int8 = VARIANTS[name]
        folder = Path(args["int8_dir"] if int8 else args["fp32_dir"])
        t0 = time.perf_counter()
        compiled = [_compile(core, folder / f, size, precision, threads) for f in args["files"]]
        compile_s = time.perf_counter() - t0
        reqs = [c.create_infer_request() for c in compiled]
        logits = np.empty((len(x), len(reqs)))
        probs = np.empty((len(x), len(reqs)))
        for j, r in enumerate(reqs):
            for k in range(len(x)):
                r.infer({0: x[k:k + 1]})
                probs[k, j] = float(r.get_output_tensor(0).data.reshape(-1)[0])
                z = r.get_output_tensor(1).data.reshape(-1)
                logits[k, j] = float(z[1]) - float(z[0])
        requests[name] = reqs
        out["variants"][name] = {"compile_s": compile_s, "p_fake": probs.tolist(), "logit": logits.tolist(),
                                 "hint": str(compiled[0].get_property("INFERENCE_PRECISION_HINT"))}
        print(f"  {name}: scored {len(x)} images", file=sys.stderr, flush=True)

    # Latency, one decoded 1280x720 image: every variant in turn, `repeats` rounds.
    frame = _timing_frame()

    def run_variant(reqs: list[Any]) -> float:
        xi = np.asarray(preprocess(frame, size), dtype=np.float32)[None]
        total = 0.0
        for r in reqs:
            r.infer({0: xi})
            total += float(r.get_output_tensor(0).data.reshape(-1)[0])
        return total / len(reqs)

    runners = {n: (lambda r=r: run_variant(r)) for n, r in requests.items()}
    times: dict[str, list[float]] = {n: [] for n in runners}
    scores: dict[str, float] = {}
    for n, fn in runners.items():  # warm-up
        scores[n] = fn()
    for _ in range(args["repeats"]):
        for n, fn in runners.items():
            time.sleep(0.2)
            t0 = time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - t0)
    out["latency"] = {n: {"median_s": statistics.median(t), "times": t, "score": scores[n]} for n, t in times.items()}
    return out


# --- analysis (parent) --------------------------------------------------------------------------------
def _sigmoid(z: Any) -> Any:
    import numpy as np
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def analyse(m: dict[str, Any], sharpen: float) -> dict[str, Any]:
    import numpy as np

    from mffmoe.engine.precision import TARGET_LABEL_AGREEMENT, TARGET_MAX_ABS_DIFF, agreement

    base_p = np.asarray(m["variants"]["fp32"]["p_fake"])
    base_z = np.asarray(m["variants"]["fp32"]["logit"])
    centre, spread = np.median(base_z, axis=0), base_z.std(axis=0)
    kinds = ["generated" if n.startswith("sample-") else "faces" if n.startswith("lfw-") else "photos"
             for n in m["images"]]
    groups = {k: np.array([i for i, g in enumerate(kinds) if g == k]) for k in ("generated", "photos", "faces")}
    lat = m["latency"]
    ref_s, fp32_s = lat["reference"]["median_s"], lat["fp32"]["median_s"]
    rows = {}
    for name, v in m["variants"].items():
        p, z = np.asarray(v["p_fake"]), np.asarray(v["logit"])
        plain = agreement(base_p.mean(axis=1), p.mean(axis=1))
        sharp = agreement(_sigmoid(sharpen * (base_z - centre) / spread).mean(axis=1),
                          _sigmoid(sharpen * (z - centre) / spread).mean(axis=1))
        speedup = ref_s / lat[name]["median_s"]
        subsets = {k: agreement(base_p[idx].mean(axis=1), p[idx].mean(axis=1)) for k, idx in groups.items()}
        rows[name] = {"subsets": subsets,
            "compile_s": v["compile_s"], "hint": v["hint"], "latency_s": lat[name]["median_s"],
            "x_fp32": fp32_s / lat[name]["median_s"], "x_reference": speedup, "plain": plain, "sharpened": sharp,
            "per_expert_max_abs_diff": np.abs(p - base_p).max(axis=0).tolist(),
            "per_expert_logit_rel_err": (np.sqrt(((z - base_z) ** 2).mean(axis=0)) / spread).tolist(),
            "targets": {"speed": speedup >= TARGET_SPEEDUP,
                        "agreement": plain["label_agreement"] >= TARGET_LABEL_AGREEMENT,
                        "max_abs_diff": plain["max_abs_diff"] <= TARGET_MAX_ABS_DIFF,
                        "sharpened_agreement": sharp["label_agreement"] >= TARGET_LABEL_AGREEMENT,
                        "sharpened_max_abs_diff": sharp["max_abs_diff"] <= TARGET_MAX_ABS_DIFF}}
    fake_share = float(np.mean(base_p.mean(axis=1) >= 0.5))
    sharp_scores = _sigmoid(sharpen * (base_z - centre) / spread).mean(axis=1)
    return {"rows": rows, "reference_s": ref_s, "fp32_vs_reference_score_diff":
            abs(lat["reference"]["score"] - lat["fp32"]["score"]), "fake_share_fp32": fake_share,
            "fake_share_fp32_sharpened": float(np.mean(sharp_scores >= 0.5)),
            "score_range_fp32": [float(base_p.mean(axis=1).min()), float(base_p.mean(axis=1).max())],
            "logit_std_fp32": spread.tolist()}


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def table(res: dict[str, Any], sharpen: float) -> str:
    a = res["analysis"]
    n = len(res["measure"]["images"])
    lines = [
        f"| precision | compile (s) | image b1 (s) | x fp32 | x ref | max abs diff | label agreement | "
        f"sharpened (S={sharpen:g}) max abs diff | sharpened agreement | targets (4x, >=99%, <=0.01) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| reference (spec algorithm) | - | {a['reference_s']:.3f} | - | 1.00 | - | - | - | - | - |"]
    for name, r in a["rows"].items():
        t = r["targets"]
        met = "-" if name == "fp32" else (f"{_yes(t['speed'])}, {_yes(t['agreement'])}, {_yes(t['max_abs_diff'])}"
                                          f" (sharpened: {_yes(t['sharpened_agreement'])}, "
                                          f"{_yes(t['sharpened_max_abs_diff'])})")
        lines.append(f"| {name} | {r['compile_s']:.1f} | {r['latency_s']:.3f} | {r['x_fp32']:.2f} | "
                     f"{r['x_reference']:.2f} | {r['plain']['max_abs_diff']:.2e} | "
                     f"{100 * r['plain']['label_agreement']:.1f}% | {r['sharpened']['max_abs_diff']:.2e} | "
                     f"{100 * r['sharpened']['label_agreement']:.1f}% | {met} |")
    lines += ["", "| by subset: max abs diff / label agreement | " + " | ".join(
        f"{k} ({v['images']})" for k, v in a["rows"]["fp32"]["subsets"].items()) + " |", "|---|---|---|---|"]
    for name, r in a["rows"].items():
        if name != "fp32":
            lines.append(f"| {name} | " + " | ".join(f"{v['max_abs_diff']:.2e} / {100 * v['label_agreement']:.1f}%"
                                                     for v in r["subsets"].values()) + " |")
    roster = res["setup"]["roster"]
    lines += ["", "| per expert: max abs P(fake) diff / logit error (RMS / fp32 logit std) | "
              + " | ".join(f"{i}: {name.split('.')[0]}" for i, name in enumerate(roster)) + " |",
              "|---|" + "---|" * len(roster)]
    for name, r in a["rows"].items():
        if name == "fp32":
            continue
        cells = [f"{d:.3f} / {e:.3f}" for d, e in zip(r["per_expert_max_abs_diff"], r["per_expert_logit_rel_err"],
                                                      strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lo, hi = a["score_range_fp32"]
    lines += ["", f"{n} images; fp32 ensemble scores {lo:.3f}..{hi:.3f}, FAKE share {100 * a['fake_share_fp32']:.0f}% "
              f"({100 * a['fake_share_fp32_sharpened']:.0f}% sharpened); fp32 logit std per expert: "
              + ", ".join(f"{s:.2f}" for s in a["logit_std_fp32"])
              + f"; |reference - fp32| on the timing image: {a['fp32_vs_reference_score_diff']:.1e}."]
    runs = res["measure"].get("reference_runs")
    if runs:
        lines.append("Reference medians before / after the engines: "
                     + " / ".join(f"{r['median_s']:.3f} s" for r in runs) + " (the faster counts).")
    return "\n".join(lines)


def child(task: str, args: dict[str, Any]) -> dict[str, Any]:
    """One measurement in a fresh interpreter (its stderr passes through); it prints one RESULT line."""
    r = subprocess.run([sys.executable, __file__, "--child", task, json.dumps(args)], text=True,
                       stdout=subprocess.PIPE, stderr=None)
    line = next((s for s in r.stdout.splitlines() if s.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{task} failed ({r.returncode})")
    result: dict[str, Any] = json.loads(line[7:])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work" / "precision")
    ap.add_argument("--weights", type=Path, help="weights directory (default: a random full roster under --work)")
    ap.add_argument("--repeats", type=int, default=9, help="timed rounds (median)")
    ap.add_argument("--calibration", type=int, default=64, help="generated calibration images for int8")
    ap.add_argument("--sharpen", type=float, default=3.0, help="S: standardised-logit scale of the sharpened view")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        task, payload = a.child
        fn = {"measure": child_measure, "reference": child_reference}[task]
        print("RESULT " + json.dumps(fn(json.loads(payload))), flush=True)
        return

    from mffmoe.engine.precision import cpu_supports

    variants = a.variants.split(",")
    for name in variants:
        reason = cpu_supports(VARIANTS[name][0]) or (cpu_supports("int8") if VARIANTS[name][1] else None)
        if reason:
            raise SystemExit(f"{name}: {reason}")
    started = time.time()
    a.work.mkdir(parents=True, exist_ok=True)
    info = setup(a.work, a.weights, a.calibration)
    args = {**info, "variants": ["fp32", *[v for v in variants if v != "fp32"]], "repeats": a.repeats,
            "threads": os.cpu_count() or 1}
    # The reference before and after the engines, in processes of its own; the faster median counts (the
    # conservative choice for our ratios: on this shared VM other jobs slowed one such run up to 8x).
    before = child("reference", args)
    measure = child("measure", args)
    after = child("reference", args)
    measure["latency"]["reference"] = min(before, after, key=lambda r: r["median_s"])
    measure["reference_runs"] = [before, after]
    res = {"setup": info, "measure": measure, "load_average": os.getloadavg(),
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
           "minutes": round((time.time() - started) / 60, 1), "sharpen": a.sharpen}
    res["analysis"] = analyse(res["measure"], a.sharpen)
    print(table(res, a.sharpen))
    print(f"\nrun: {res['started']}, {res['minutes']} min, load average at the end {res['load_average']}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
