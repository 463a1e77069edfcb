"""Face detector recall on generated scenes (real faces pasted into backgrounds, `mffmoe.testing.faces`), the
figures of docs/faces.md's comparison table, in one command:

    .venv/bin/python benchmarks/face_recall.py [--first 0] [--scenes 100] [--free 50] [--min-face 32]

Prints recall (overall and by face height), false faces in the face scenes and on face-free scenes, the
missed faces (scene, height), and the detector's time per 1920x1080 frame (warm, min and median of 7).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", type=int, default=0, help="first scene seed")
    ap.add_argument("--scenes", type=int, default=100, help="scenes with faces (1280x720, 1-4 faces each)")
    ap.add_argument("--free", type=int, default=50, help="face-free scenes")
    ap.add_argument("--min-face", type=int, default=32)
    ap.add_argument("--detector", default="blazeface")
    args = ap.parse_args()

    from mffmoe.faces.detectors import create_detector
    from mffmoe.testing.faces import face_free_scene, face_scene, matches

    detector = create_detector(args.detector, min_face=args.min_face)
    found = total = false = 0
    by_size: dict[str, list[int]] = {}
    misses = []
    for seed in range(args.first, args.first + args.scenes):
        scene = face_scene(seed)
        boxes = [f.box for f in detector.detect(np.asarray(scene.image))]
        hit, wrong = matches(boxes, scene.faces)
        found, total, false = found + hit, total + len(scene.faces), false + wrong
        for box in scene.faces:
            h = box[3] - box[1]
            key = "32-64" if h < 64 else "64-128" if h < 128 else "128-400"
            got = matches(boxes, [box])[0]
            by_size.setdefault(key, [0, 0])
            by_size[key][0] += got
            by_size[key][1] += 1
            if not got:
                misses.append((seed, round(h)))
    free = sum(len(detector.detect(np.asarray(face_free_scene(seed)))) for seed in range(args.free))
    frame = np.asarray(face_scene(0).image.resize((1920, 1080)))
    detector.detect(frame)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        detector.detect(frame)
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "scenes": f"{args.first}-{args.first + args.scenes - 1}", "min_face": args.min_face,
        "recall": round(found / total, 3), "found": found, "faces": total, "false_in_scenes": false,
        "false_on_face_free": free, "by_height": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_size.items())},
        "ms_1080p_min": round(min(times) * 1000, 1), "ms_1080p_median": round(statistics.median(times) * 1000, 1),
        "misses": misses}))


if __name__ == "__main__":
    main()
