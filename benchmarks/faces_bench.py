"""The faces benchmark (issue 12): face detection per 1080p frame against one ensemble pass, and an image and
a 16-frame video in faces mode against frame mode, full default roster, in one command:

    .venv/bin/python benchmarks/faces_bench.py [--work DIR] [--json out.json]   # ~5 min on 2 cores

It builds (once, cached under --work, default benchmarks/.work, shared with benchmarks/run.py) the random
full-roster checkpoint in the official layout, a 1920x1080 JPEG with two real faces (`mffmoe.testing.faces`)
and a 10-second 1080p H.264 video of two faces crossing a generated background. Then, in this process:
BlazeFace on the frame (its first call, which compiles OpenVINO graphs, and the median of warm calls); the
spec's reference algorithm on the same JPEG (one ensemble pass: decode, resize, seven experts); the default
`Detector` (what `mffmoe analyze` builds) on the JPEG in frame and faces mode, and on the video with 16
frames in both modes. Ratios are within this run; the machine's load is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1920, 1080


def make_media(work: Path) -> tuple[Path, Path, Path]:
    from mffmoe.testing.checkpoints import default_roster_checkpoint
    from mffmoe.testing.faces import face_scene

    work.mkdir(parents=True, exist_ok=True)
    official = work / "official"
    if not (official / "MFF-MoE-v1.state").exists():
        default_roster_checkpoint(official)
    image = work / "faces_1080p.jpg"
    if not image.exists():
        face_scene(4, WIDTH, HEIGHT, n_faces=2, sizes=(140, 260)).image.save(image, quality=92)
    video = work / "faces_10s_1080p.mp4"
    if not video.exists():
        _faces_video(video)
    return official, image, video


def _faces_video(path: Path, seconds: float = 10, fps: int = 25) -> None:
    """Two real faces crossing a generated 1080p background (H.264, GOP 250)."""
    import av

    from mffmoe.testing.faces import background, face_sources

    astronaut, hopper = face_sources()[:2]
    bg = background(WIDTH, HEIGHT, np.random.default_rng(1))
    heads = [s.image.crop(s.head).resize((200, 220)) for s in (astronaut, hopper)]
    n = int(seconds * fps)
    tmp = path.with_name(path.name + ".tmp.mp4")
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = 250
        stream.options = {"preset": "ultrafast"}
        for i in range(n):
            frame = bg.copy()
            t = i / (n - 1)
            frame.paste(heads[0], (int(100 + 1500 * t), 300))
            frame.paste(heads[1], (int(1600 - 1500 * t), 420))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    os.replace(tmp, path)


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def reference_pass(official: Path, image: Path, repeats: int) -> tuple[float, list[float]]:
    """The spec's ensemble pass on `image` (its memory freed on return)."""
    from mffmoe.testing.reference import ReferenceDetector

    ref = ReferenceDetector(str(official))
    ref.score_file(str(image))  # warm-up
    med, times, _ = timed(lambda: ref.score_file(str(image)), repeats)
    return med, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per image measurement (median)")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    args = ap.parse_args()
    official, image, video = make_media(args.work)
    from PIL import Image

    from mffmoe.faces.blazeface import BlazeFace
    from mffmoe.inference.detector import Detector
    res: dict = {"load_before": os.getloadavg()[0]}
    rgb = np.asarray(Image.open(image).convert("RGB"))
    faces = BlazeFace(min_face=32)
    t0 = time.perf_counter()
    found = faces.detect(rgb)
    res["detect_first_s"] = time.perf_counter() - t0
    faces.detect(rgb)
    res["detect_s"], res["detect_times"], _ = timed(lambda: faces.detect(rgb), 9)
    res["faces_found"] = len(found)

    res["reference_s"], res["reference_times"] = reference_pass(official, image, args.repeats)

    det = Detector.from_dir(official, device="cpu")  # the default configuration of `mffmoe analyze`
    res["engine"] = det.engine.name
    for crop in ("frame", "faces"):
        det.analyze(image, crop=crop)  # warm-up (faces: graphs compiled)
        med, times, r = timed(lambda crop=crop: det.analyze(image, crop=crop), args.repeats)
        res[f"image_{crop}_s"], res[f"image_{crop}_times"] = med, times
        res[f"image_{crop}_score"] = r.score  # type: ignore[attr-defined]
        res[f"image_{crop}_faces"] = len(r.faces or [])  # type: ignore[attr-defined]
    for crop in ("frame", "faces"):
        t0 = time.perf_counter()
        r = det.analyze(video, frames=16, crop=crop)
        res[f"video_{crop}_s"] = time.perf_counter() - t0
        res[f"video_{crop}_persons"] = len(r.persons or [])  # type: ignore[union-attr]
    res["load_after"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    print(report(res))


def report(r: dict) -> str:
    ms = 1000
    lines = [
        f"load average before/after: {r['load_before']:.2f} / {r['load_after']:.2f}; default engine: {r['engine']}",
        "",
        "| measure | value | ratio |",
        "|---|---|---|",
        f"| face detection, 1080p frame (BlazeFace, min face 32 px), warm median | {r['detect_s'] * ms:.1f} ms | "
        f"{r['detect_s'] / r['reference_s']:.1%} of the reference pass, "
        f"{r['detect_s'] / r['image_frame_s']:.1%} of the default engine's |",
        f"| face detection, first call (compiles the graphs) | {r['detect_first_s'] * ms:.0f} ms | |",
        f"| one ensemble pass, reference algorithm (1080p JPEG) | {r['reference_s']:.3f} s | 1.00 |",
        f"| one ensemble pass, default `Detector` ({r['engine']}), frame mode | {r['image_frame_s']:.3f} s | "
        f"{r['reference_s'] / r['image_frame_s']:.2f}x the reference |",
        f"| image, faces mode ({r['image_faces_faces']} faces) | {r['image_faces_s']:.3f} s | "
        f"{r['image_faces_s'] / r['image_frame_s']:.2f}x frame mode |",
        f"| 16-frame 10-s 1080p video, frame mode | {r['video_frame_s']:.2f} s | 1.00 |",
        f"| 16-frame video, faces mode ({r['video_faces_persons']} persons) | {r['video_faces_s']:.2f} s | "
        f"{r['video_faces_s'] / r['video_frame_s']:.2f}x frame mode |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
