"""Image latency of the library, the host adapter and the server against the reference algorithm, paired
(issue 14).

    .venv/bin/python benchmarks/paired_latency.py --work /tmp/mffmoe-bench [--rounds 10] [--json out.json]

`benchmarks/every_mode.py` times each mode in a process of its own, minutes apart; on a VM whose speed
drifts by 10-30% over minutes, those ratios measure the drift as much as the code. Here four processes
stay loaded side by side (the spec's reference algorithm, the library's `Detector.from_dir(weights,
crop="frame")` in a plain Python process, `MFFMoEDetectorV1(config).load()` and `mffmoe serve` with default
settings) and answer one image each in turn, round after round (the order rotates), so each round's ratios
compare runs made seconds apart. A pause before each run (`PAUSE_S`) lets the previous subject's idle
threads stop spinning, so no subject pays for another's. Printed: per-round ratios and their median, the
figure that decides the 2.0x target. Uses the weights and the 1280x720 image `every_mode.py` prepared.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MFFMOE = str(ROOT / ".venv/bin/mffmoe")
TARGET = 2.0
MAX_DIFF = 1e-4
#: seconds of quiet before each timed run: torch's and OpenVINO's worker threads spin for a while after a run
PAUSE_S = 0.5
#: the subjects compared with the reference, in their order in a round (which rotates)
SUBJECTS = ("library", "host adapter", "server")

WORKER = r'''
import sys, time
kind, weights, image = sys.argv[1:4]
if kind == "reference":
    from pathlib import Path
    from mffmoe.model.info import read_manifest
    from mffmoe.testing.reference import ReferenceDetector
    ref = ReferenceDetector(weights, *read_manifest(Path(weights)))
    run = lambda: ref.score_file(image)
elif kind == "library":
    from mffmoe import Detector
    det = Detector.from_dir(weights, crop="frame")
    run = lambda: det.analyze(image).score
else:
    from mffmoe import MFFMoEDetectorV1, MFFMoEV1Config
    host = MFFMoEDetectorV1(MFFMoEV1Config(model_path=weights))
    host.load()
    run = lambda: host.analyze(media_path=image).score
run()
print("ready", flush=True)
for _ in sys.stdin:
    t = time.perf_counter()
    score = run()
    print(f"{time.perf_counter() - t:.6f} {score!r}", flush=True)
'''


class Worker:
    """A process that times one image per line it is sent, and says its score."""

    def __init__(self, kind: str, weights: str, image: str) -> None:
        self.proc = subprocess.Popen([PYTHON, "-c", WORKER, kind, weights, image], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"{kind} worker did not start")

    def time_one(self) -> tuple[float, float]:
        """(seconds, score) of one image."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        seconds, score = self.proc.stdout.readline().split()
        return float(seconds), float(score)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


class Server:
    """`mffmoe serve` with default settings; `time_one` posts the image to `/analyze` (upload included)."""

    def __init__(self, weights: str, image: str) -> None:
        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        self.url, self.image, self.httpx = f"http://127.0.0.1:{port}", image, httpx
        self.proc = subprocess.Popen([MFFMOE, "serve", "-w", weights, "--port", str(port), "--log-level", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.perf_counter()
        while True:
            try:
                health = httpx.get(f"{self.url}/health", timeout=5).json()
                if health.get("ready") and not health.get("weights", {}).get("checking"):
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.perf_counter() - t0 > 600:
                raise SystemExit("server did not start")
            time.sleep(0.5)
        self.time_one()

    def time_one(self) -> tuple[float, float]:
        t = time.perf_counter()
        with open(self.image, "rb") as f:
            r = self.httpx.post(f"{self.url}/analyze", files={"media": (Path(self.image).name, f)}, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - t, float(r.json()["data"]["score"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def start(name: str, weights: str, image: str) -> Worker | Server:
    """A loaded subject: `reference`, `library`, `host adapter` or `server`."""
    if name == "server":
        return Server(weights, image)
    return Worker({"host adapter": "host"}.get(name, name), weights, image)


def measure(weights: str, image: str, rounds: int, subjects: tuple[str, ...] = SUBJECTS,
            pause: float = PAUSE_S) -> dict:
    """Per-round times of the reference and of `subjects` and, for each subject, the median of its per-round
    ratios against the reference (the figure that decides the 2.0x target) and its largest score difference."""
    load = os.getloadavg()
    loaded: dict[str, Worker | Server] = {}
    try:
        for name in ("reference", *subjects):
            loaded[name] = start(name, weights, image)
        return _rounds(loaded, rounds, pause, load)
    finally:
        for s in loaded.values():
            s.close()


def _rounds(subjects: dict[str, Worker | Server], rounds: int, pause: float, load: tuple[float, ...]) -> dict:
    times: dict[str, list[float]] = {k: [] for k in subjects}
    scores: dict[str, list[float]] = {k: [] for k in subjects}
    names = list(subjects)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(pause)
            seconds, score = subjects[name].time_one()
            times[name].append(seconds)
            scores[name].append(score)
    out: dict = {"rounds": rounds, "pause_s": pause, "subjects": names[1:], "times": times, "load_before": load,
                 "load_after": os.getloadavg(), "reference_s": statistics.median(times["reference"])}
    for name in names[1:]:
        ratios = [r / t for r, t in zip(times["reference"], times[name], strict=True)]
        out[name] = {"median_s": statistics.median(times[name]), "ratio": statistics.median(ratios),
                     "ratios": ratios, "max_abs_diff": max(abs(a - b) for a in scores["reference"]
                                                            for b in scores[name])}
    return out


def table(out: dict) -> str:
    lines = [f"{out['rounds']} rounds, {out['pause_s']} s pause before each run, load average "
             f"{out['load_before'][0]:.2f} before, {out['load_after'][0]:.2f} after",
             "| subject | median s | x reference, median of per-round ratios | per-round ratios "
             "| max \\|score diff\\| | target (>= 2.0x, <= 1e-4) |",
             "|---|---|---|---|---|---|",
             f"| reference | {out['reference_s']:.3f} | 1.00 | | | |"]
    for name in out["subjects"]:
        o = out[name]
        met = o["ratio"] >= TARGET and o["max_abs_diff"] <= MAX_DIFF
        lines.append(f"| {name} | {o['median_s']:.3f} | {o['ratio']:.2f}x | {' '.join(f'{x:.2f}' for x in o['ratios'])}"
                     f" | {o['max_abs_diff']:.1e} | {'met' if met else '**not met**'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mffmoe-bench"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    weights, image = str(a.work / "official"), str(a.work / "image_1280x720.jpg")
    if not Path(image).exists():
        raise SystemExit(f"{image} is missing: run benchmarks/every_mode.py --work {a.work} first")
    out = measure(weights, image, a.rounds)
    print(table(out))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))

if __name__ == "__main__":
    main()
