"""Early exit in faces mode on a trained small roster: is it exact, and what does it save?

    PYTHONPATH=src .venv/bin/python benchmarks/early_exit_faces.py [--work DIR] [--json OUT]

Seven small experts (benchmarks/run.py's TRAINED_ROSTER) are trained with `mffmoe train --crop faces` on
the face-centred planted-pattern task (`mffmoe.testing.planted_faces`: real photographed faces, the
astronaut and Grace Hopper, pasted in generated scenes, a faint grating on the face of every fake), cached
in `--work` (about 30 minutes on 2 cores the first time). A held-out half-real, half-fake set of scenes
(the training grating's strength by default; `--amplitude 12` makes it fainter, and hard) and a few short
videos of such scenes (the scene drifting a few pixels per frame) are then scored in faces mode by the
full ensemble and by early exit on the same engine, item by item, alternating (this VM's speed drifts).

Reported per kind: accuracy, experts run (of 7; images: per face, videos: on the crops the score is
pooled from), FLOP saving (counted: every expert call times its GFLOP, both runs), time saving, labels
equal to the full ensemble's and the full score inside the interval. Faces-mode image results carry no
`experts_run`/`score_interval` yet, so for images they come from the faces' `expert_scores` (the image's
score is its highest face's: the interval is [highest face low, highest face high]).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from run import TRAINED_ROSTER  # noqa: E402  (benchmarks/run.py: the same seven small experts)

INPUT_SIZE = 64  # the planted face task's grating period is set for 64-px face crops
N_TRAIN, N_VAL = 128, 30
TRAIN_ARGS = ["--input-size", str(INPUT_SIZE), "--epochs", "12", "--batch-size", "16", "--lr", "2e-3",
              "--augment", "hflip", "--workers", "0", "--device", "cpu"]
EPS = 1e-12


class Counting:
    """The engine both detectors share, counting the GFLOP of every expert call (early exit's FLOPs are
    what actually ran, crops of a video included)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gflop = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict_experts(self, batch: Any, experts: Sequence[int]) -> np.ndarray:
        self.gflop += len(batch) * sum(self.inner.costs[e] for e in experts)
        return self.inner.predict_experts(batch, experts)

    def predict(self, batch: Any) -> np.ndarray:
        return self.predict_experts(batch, range(len(self.inner.roster)))


def train(work: Path) -> Path:
    """The faces-mode run (cached): `mffmoe train --crop faces` on the planted face task."""
    from mffmoe.testing.planted_faces import make_planted_face_dataset

    run_dir = work / "run"
    if (run_dir / "MFF-MoE-v1.state").exists():
        return run_dir
    data = make_planted_face_dataset(work / "data", N_TRAIN, N_TRAIN, seed=0)
    val = make_planted_face_dataset(work / "val", N_VAL, N_VAL, seed=7)
    subprocess.run([str(ROOT / ".venv/bin/mffmoe"), "train", "--data", str(data), "--val", str(val),
                    "--out", str(run_dir), "--crop", "faces", "--experts", ",".join(TRAINED_ROSTER), *TRAIN_ARGS],
                   check=True)
    return run_dir


def test_images(work: Path, n: int, amplitude: float) -> list[tuple[Path, str]]:
    """Held-out scenes (seed 3: no scene shared with training's 0 or validation's 7), `n` real + `n` fake."""
    from mffmoe.testing.planted_faces import make_planted_face_dataset

    folder = work / f"test_{n}_a{amplitude:g}"
    if not folder.exists():
        make_planted_face_dataset(folder, n, n, amplitude=amplitude, seed=3)
    return [(p, p.parent.name.upper()) for p in sorted(folder.rglob("*.png"))]


def test_videos(work: Path, n: int, amplitude: float, frames: int) -> list[tuple[Path, str]]:
    """`n` real + `n` fake short videos: one held-out scene each, drifting 3 px per frame (H.264, CRF 12,
    so the grating survives the encoder)."""
    from mffmoe.testing.media import encode_video
    from mffmoe.testing.planted_faces import planted_face_scene

    folder = work / f"videos_{n}_a{amplitude:g}_{frames}"
    out = []
    for fake in (False, True):
        for i in range(n):
            path = folder / f"{'fake' if fake else 'real'}_{i}.mp4"
            if not path.exists():
                scene = np.asarray(planted_face_scene(5_000 + 500 * fake + i, fake, amplitude=amplitude).image)
                encode_video(path, (np.roll(scene, (2 * t, 3 * t), axis=(0, 1)) for t in range(frames)), fps=8,
                             options={"crf": "12"})
            out.append((path, "FAKE" if fake else "REAL"))
    return out


def image_bounds(result: Any, n_experts: int) -> tuple[float, float, float]:
    """(mean experts run per face, low, high) of an early-exit faces-mode image; a frame scored whole (no
    face) reports its own."""
    if not result.faces:
        lo, hi = result.score_interval
        return float(result.experts_run), lo, hi
    runs, lows, highs = [], [], []
    for face in result.faces:
        ran = face.expert_scores
        runs.append(len(ran))
        lows.append(sum(ran) / n_experts)
        highs.append((sum(ran) + n_experts - len(ran)) / n_experts)
    return float(np.mean(runs)), max(lows), max(highs)


def measure(full: Any, early: Any, counter: Counting, items: list[tuple[Path, str]], video: bool,
            frames: int) -> dict[str, Any]:
    """Each item through the full ensemble, then early exit (alternating), compared."""
    n_experts = len(full.info.roster)
    kwargs = {"frames": frames} if video else {}
    rows = []
    for path, truth in items:
        counter.gflop = 0.0
        t0 = time.perf_counter()
        a = full.analyze(path, **kwargs)
        t1 = time.perf_counter()
        full_gflop, counter.gflop = counter.gflop, 0.0
        b = early.analyze(path, **kwargs)
        t2 = time.perf_counter()
        if video:
            run_, (lo, hi) = float(b.experts_run), b.score_interval
        else:
            run_, lo, hi = image_bounds(b, n_experts)
        rows.append({"path": path.name, "truth": truth, "full": a.prediction, "early": b.prediction,
                     "score": a.score, "interval": [lo, hi], "experts_run": run_, "full_s": t1 - t0,
                     "early_s": t2 - t1, "flop_saving": 1 - counter.gflop / full_gflop,
                     "faces": len(a.faces or []) if not video else len(a.persons or []),
                     "in_scope": a.in_scope})
    return {
        "items": len(rows), "fake_share": float(np.mean([r["truth"] == "FAKE" for r in rows])),
        "accuracy": float(np.mean([r["full"] == r["truth"] for r in rows])),
        "mean_experts_run": float(np.mean([r["experts_run"] for r in rows])), "experts": n_experts,
        "mean_flop_saving": float(np.mean([r["flop_saving"] for r in rows])),
        "time_saving": 1 - sum(r["early_s"] for r in rows) / sum(r["full_s"] for r in rows),
        "labels_equal": all(r["full"] == r["early"] for r in rows),
        "scores_inside": all(r["interval"][0] - EPS <= r["score"] <= r["interval"][1] + EPS for r in rows),
        "out_of_scope": sum(not r["in_scope"] for r in rows), "rows": rows}


def table(res: dict[str, Any]) -> str:
    lines = ["| faces mode | items | FAKE share | accuracy | experts run (of 7) | FLOP saving | time saving "
             "| labels equal | full score inside interval |", "|---|---|---|---|---|---|---|---|---|"]
    for name, e in res["kinds"].items():
        lines.append(f"| {name} | {e['items']} | {100 * e['fake_share']:.0f}% | {100 * e['accuracy']:.0f}% | "
                     f"{e['mean_experts_run']:.2f} | {100 * e['mean_flop_saving']:.0f}% | "
                     f"{100 * e['time_saving']:.0f}% | {e['labels_equal']} | {e['scores_inside']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work" / "early_exit_faces")
    ap.add_argument("--json", type=Path, help="write the raw results (every item) here")
    ap.add_argument("--images", type=int, default=64, help="held-out images of each class")
    ap.add_argument("--videos", type=int, default=4, help="held-out videos of each class")
    ap.add_argument("--frames", type=int, default=16, help="frames per video (all are sampled)")
    ap.add_argument("--amplitude", type=float, default=20.0, help="the held-out grating's grey levels "
                    "(training: 20)")
    a = ap.parse_args()
    start = time.perf_counter()
    a.work.mkdir(parents=True, exist_ok=True)
    run_dir = train(a.work)
    images = test_images(a.work, a.images, a.amplitude)
    videos = test_videos(a.work, a.videos, a.amplitude, a.frames)

    from mffmoe.engine.auto import machine
    from mffmoe.inference.detector import Detector

    loaded = Detector.from_dir(str(run_dir), engine="torch", device="cpu", batch_size=4)
    assert loaded.crop == "faces" and loaded.face_pooling == "max", (loaded.crop, loaded.face_pooling)
    counter = Counting(loaded.engine)
    full = Detector(counter, loaded.info, batch_size=4, crop="faces", finder=loaded.finder)
    early = Detector(counter, loaded.info, batch_size=4, crop="faces", finder=loaded.finder,
                     early_exit=True)
    full.analyze(images[0][0])  # warm-up: the face detector's and the engine's first calls
    res: dict[str, Any] = {"roster": list(loaded.info.roster), "input_size": loaded.info.input_size,
                           "amplitude": a.amplitude, "frames": a.frames, "kinds": {
                               "images": measure(full, early, counter, images, False, a.frames),
                               f"videos ({a.frames} frames)": measure(full, early, counter, videos, True, a.frames)}}
    m = machine()
    res["machine"] = f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}"
    res["total_s"] = time.perf_counter() - start
    loaded.close()
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, default=str))
    print(table(res))
    print(f"\nroster {','.join(res['roster'])} at {res['input_size']} px; held-out grating {a.amplitude:g} grey "
          f"levels; {res['machine']}; {res['total_s']:.0f} s")
    if not all(e["labels_equal"] and e["scores_inside"] for e in res["kinds"].values()):
        sys.exit("early exit was not exact")


if __name__ == "__main__":
    main()
