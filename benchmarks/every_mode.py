"""Issue 14's targets in one command: the default configuration's speed and memory in every mode.

    .venv/bin/python benchmarks/every_mode.py --work /tmp/mffmoe-bench --json every_mode.json

Uses `run.py`'s media and random full-roster checkpoint (official two-file layout, built once under
--work). Nothing is exported by hand: the first measurement is a first use of a fresh copy of the weights,
where `--engine auto` prepares its graphs itself (timed, with the peak memory of its largest process).
Then, each in a fresh process, against the spec's reference algorithm measured in the same run:

- per image at batch 1 (frame mode, the spec's input): the library's default `Detector.from_dir`, the
  host adapter `MFFMoEDetectorV1(config).load()` and the server's `POST /analyze`. Their verdicts come from
  `paired_latency.py` (four loaded processes, the reference among them, answering in turn: the VM's speed
  drifts by 10-30% over minutes); their separate-process times are printed beside them. The CLI's one
  image is timed from nothing (`mffmoe analyze one.jpg`, wall) against a fresh reference process, in turn;
- many images: `analyze_many` over 20 photos (images/s against the reference's batch-1 rate; the real
  commands' rows, minutes later, against the mean of its times before and after them);
- 16 frames of a 10-s and of a 5-min 1080p video (`mffmoe analyze clip.mp4 --frames 16`, wall time);
- peak RSS of the real CLI in every mode (one image, 20 images, a 100-frame video; frame and faces
  mode), of a scan, and of `mffmoe serve` after loading and while it answers 4 requests at once;
- start-up: `mffmoe --help`, a missing and an unreadable input.

Prints one table with the targets met or not. Ratios are within this run only (CPU speeds differ).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paired_latency  # noqa: E402
from run import ROOT, RSS_WRAPPER, _median_time, make_fast_video  # noqa: E402

MFFMOE = str(ROOT / ".venv/bin/mffmoe")
TARGETS = {"rss_mb": 1.1 * 1000, "image_x": 2.0, "many_x": 2.2, "video_x": 2.0, "length_x": 1.5, "startup_s": 1.0}


# --- helpers ----------------------------------------------------------------------------------------
def timed_rss(cmd: list[str], env: dict | None = None, timeout: int = 1800) -> dict:
    """Wall time, exit status and the peak RSS of the largest process of `cmd`'s tree (RUSAGE_CHILDREN)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *cmd], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    kb, rc = r.stdout.split()[-2:]
    if rc != "0":
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}): {r.stderr[-2000:]}")
    return {"seconds": wall, "peak_mb": int(kb) / 1024}


def child(task: str, args: dict, timeout: int = 1800) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", task, json.dumps(args)], capture_output=True,
                       text=True, timeout=timeout)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"child {task} failed ({r.returncode}):\n{r.stderr[-3000:]}")


def hwm_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


# --- children (fresh processes) -------------------------------------------------------------------
def child_reference(a: dict) -> dict:
    from mffmoe.model.info import read_manifest
    from mffmoe.testing.reference import ReferenceDetector

    ref = ReferenceDetector(a["official"], *read_manifest(Path(a["official"])))
    ref.score_file(a["image"])
    med, times = _median_time(lambda: ref.score_file(a["image"]), a["repeats"])
    out: dict = {"image_s": med, "image_times": times, "image_score": ref.score_file(a["image"])}
    for key in () if a.get("image_only") else ("short", "long"):
        t0 = time.perf_counter()
        score, _ = ref.score_video(a[key], n_frames=16)
        out[key] = {"seconds": time.perf_counter() - t0, "score": score}
    return out


def child_library(a: dict) -> dict:
    """The library's default: `Detector.from_dir(weights)` (frame mode for the spec comparison)."""
    from mffmoe import Detector

    t0 = time.perf_counter()
    det = Detector.from_dir(a["official"], crop="frame")
    out: dict = {"load_s": time.perf_counter() - t0, "engine": det.engine.name, "reason": det.engine.auto_reason}
    det.analyze(a["image"])
    med, times = _median_time(lambda: det.analyze(a["image"]), a["repeats"])
    out.update(image_s=med, image_times=times, image_score=det.analyze(a["image"]).score)
    many = sorted(str(p) for p in Path(a["folder"]).glob("*.jpg"))
    t0 = time.perf_counter()
    scores = [r.score for _, r in det.analyze_many(many)]  # type: ignore[union-attr]
    out["many"] = {"images": len(many), "seconds": time.perf_counter() - t0, "scores": scores}
    out["peak_mb"] = hwm_mb()
    out["torch_imported"] = "torch" in sys.modules
    return out


def child_host(a: dict) -> dict:
    from mffmoe import MFFMoEDetectorV1, MFFMoEV1Config

    host = MFFMoEDetectorV1(MFFMoEV1Config(model_path=a["official"]))
    host.load()
    host.analyze(media_path=a["image"])
    med, times = _median_time(lambda: host.analyze(media_path=a["image"]), a["repeats"])
    return {"image_s": med, "image_times": times, "engine": host.detector.engine.name, "peak_mb": hwm_mb()}


CHILDREN = {"reference": child_reference, "library": child_library, "host": child_host}


# --- the server -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status_mb(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


#: the reference from nothing: a fresh process that loads the weights the spec's way and scores one image
REFERENCE_ONE = """
import sys
from pathlib import Path
from mffmoe.model.info import read_manifest
from mffmoe.testing.reference import ReferenceDetector
ReferenceDetector(sys.argv[1], *read_manifest(Path(sys.argv[1]))).score_file(sys.argv[2])
"""


def cold_image(a: dict, rounds: int = 3) -> dict:
    """One image from nothing, wall time: `mffmoe analyze one.jpg` (start-up, load, the image) against a
    fresh process running the reference the same way, alternately (the median of per-round ratios)."""
    cli, ref = [], []
    for _ in range(rounds):
        ref.append(timed_rss([sys.executable, "-c", REFERENCE_ONE, a["official"], a["image"]])["seconds"])
        cli.append(timed_rss([MFFMOE, "analyze", a["image"], "-w", a["official"], "--crop", "frame"])["seconds"])
    return {"cli_s": cli, "reference_s": ref,
            "ratio": statistics.median(r / c for r, c in zip(ref, cli, strict=True))}


def measure_server(a: dict) -> dict:
    """`mffmoe serve` (default settings): RSS once loaded, `POST /analyze` latency, and the peak while it
    answers 4 requests at once (an image, a faces-mode image, a video and a faces-mode video, 16 frames each)."""
    import httpx

    port = _free_port()
    proc = subprocess.Popen([MFFMOE, "serve", "-w", a["official"], "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 600:
                raise SystemExit(f"server did not start: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
            time.sleep(0.5)
        out: dict = {"start_s": time.perf_counter() - t0}
        while httpx.get(f"{url}/health", timeout=5).json().get("weights", {}).get("checking"):
            time.sleep(1)  # the weights' structural checks (a child process, after start-up) would share the CPU
        out["checks_s"] = time.perf_counter() - t0
        out["loaded_mb"] = _status_mb(proc.pid, "VmRSS")

        def post(path: str, **form: str) -> float:
            t = time.perf_counter()
            with open(path, "rb") as f:
                r = httpx.post(f"{url}/analyze", files={"media": (Path(path).name, f)}, data=form, timeout=900)
            r.raise_for_status()
            return time.perf_counter() - t

        post(a["image"])
        out["image_s"], out["image_times"] = _median_time(lambda: post(a["image"]), a["repeats"])
        jobs = [(a["image"], {}), (a["faces_image"], {"crop": "faces"}), (a["short"], {"frames": "16"}),
                (a["faces_video"], {"frames": "16", "crop": "faces"})]
        errors: list[BaseException] = []

        def one(job: tuple[str, dict]) -> None:
            try:
                post(job[0], **job[1])
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=one, args=(j,)) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise SystemExit(f"concurrent requests failed: {errors}")
        out["peak_mb"] = _status_mb(proc.pid, "VmHWM")
        out["after_mb"] = _status_mb(proc.pid, "VmRSS")
        return out
    finally:
        proc.terminate()
        proc.wait(30)


# --- main -------------------------------------------------------------------------------------------
def make_folder(work: Path, n: int = 20) -> Path:
    folder = work / "photos20"
    if len(list(folder.glob("*.jpg"))) >= n:
        return folder
    import numpy as np
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    src = [data.astronaut(), np.stack([data.camera()] * 3, -1), data.coffee(), data.chelsea(), data.rocket()]
    for i in range(n):
        Image.fromarray(src[i % 5]).resize((1280, 720) if i % 2 else (1024, 768)).save(folder / f"p{i:02d}.jpg",
                                                                                     quality=90)
    return folder


def fresh_copy(official: Path, dst: Path) -> Path:
    """The weights under a new folder (hard links: no copy of 1.5 GB), with no cache: a first use."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for f in official.iterdir():
        if f.is_file():
            os.link(f, dst / f.name)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/.work")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10, help="paired rounds (library, host adapter, server)")
    ap.add_argument("--no-prepare", action="store_true", help="skip the first-use measurement")
    ap.add_argument("--child")
    ap.add_argument("payload", nargs="?")
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(CHILDREN[a.child](json.loads(a.payload))))
        return
    t_start = time.perf_counter()
    s = setup_media(a.work)
    s["repeats"] = a.repeats
    res: dict = {"load_before": os.getloadavg()}
    if not a.no_prepare:
        fresh = fresh_copy(Path(s["official"]), a.work / "first_use")
        res["first_use"] = timed_rss([MFFMOE, "analyze", s["image"], "-w", str(fresh), "--crop", "frame"])
    # make sure the main copy is prepared too (a no-op when it is)
    subprocess.run([MFFMOE, "analyze", s["image"], "-w", s["official"], "--crop", "frame"], capture_output=True)
    res["startup"] = {
        "help": min(timed_rss([MFFMOE, "--help"])["seconds"] for _ in range(3)),
        "missing": min(timed_rss_ok([MFFMOE, "analyze", "/nonexistent/x.jpg", "-w", s["official"]])
                       for _ in range(3)),
        "unreadable": min(timed_rss_ok([MFFMOE, "analyze", s["text"], "-w", s["official"]]) for _ in range(3)),
    }
    res["cold_image"] = cold_image(s)
    res["reference"] = child("reference", s)
    res["library"] = child("library", s)
    res["host"] = child("host", s)
    res["server"] = measure_server(s)
    res["paired_latency"] = paired_latency.measure(s["official"], s["image"], a.rounds)
    w = ["-w", s["official"]]
    cli = {
        "image, frame": [s["image"], "--crop", "frame"],
        "image, faces (2 faces)": [s["faces_image"], "--crop", "faces"],
        "20 images, frame": [s["folder"], "--crop", "frame"],
        "20 images, faces": [s["folder"], "--crop", "faces"],
        "video 10 s, 16 frames, frame": [s["short"], "--frames", "16", "--crop", "frame"],
        "video 5 min, 16 frames, frame": [s["long"], "--frames", "16", "--crop", "frame"],
        "video 100 frames, frame": [s["short"], "--frames", "100", "--crop", "frame"],
        "video 100 frames, faces (2 persons)": [s["faces_video"], "--frames", "100", "--crop", "faces"],
    }
    res["cli"] = {name: timed_rss([MFFMOE, "analyze", *args, *w]) for name, args in cli.items()}
    scan_out = a.work / "scan_out"
    shutil.rmtree(scan_out, ignore_errors=True)
    res["scan"] = timed_rss([MFFMOE, "scan", s["folder"], "--out", str(scan_out), *w, "--crop", "frame"])
    # the reference's b1 time again: the many-input rows ran minutes after the first measurement, and
    # this VM's speed drifts; they are measured against the mean of the two
    res["reference_after"] = child("reference", {**s, "image_only": True})
    res["load_after"] = os.getloadavg()
    res["minutes"] = (time.perf_counter() - t_start) / 60
    print(report(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


def timed_rss_ok(cmd: list[str]) -> float:
    """Wall time of a command expected to fail (exit status 1), e.g. a missing input."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 1:
        raise SystemExit(f"{' '.join(cmd)}: expected exit status 1, got {r.returncode}: {r.stderr[-500:]}")
    return time.perf_counter() - t0


def setup_media(work: Path) -> dict:
    """faces_bench's checkpoint (random full roster, official layout) and two-face media, run.py's videos,
    20 photos; nothing exported by hand (this benchmark measures the default)."""
    from faces_bench import make_media

    from mffmoe.testing.media import make_image

    official, faces_image, faces_video = make_media(work)
    image = work / "image_1280x720.jpg"
    if not image.exists():
        make_image(image, 1280, 720, quality=92)
    text = work / "notes.txt"
    text.write_text("not media\n")
    return {"official": str(official), "image": str(image), "faces_image": str(faces_image),
            "faces_video": str(faces_video), "text": str(text), "folder": str(make_folder(work)),
            "short": str(make_fast_video(work / "video_10s_1080p.mp4", 10)),
            "long": str(make_fast_video(work / "video_5min_1080p.mp4", 300))}


def report(r: dict) -> str:
    ref = r["reference"]
    lib = r["library"]
    t = TARGETS

    def ok(cond: bool) -> str:
        return "met" if cond else "**not met**"

    rows = ["| measure | value | ratio / bound | target |", "|---|---|---|---|"]
    if "first_use" in r:
        fu = r["first_use"]
        rows.append(f"| first use of new weights (`mffmoe analyze one.jpg`: prepare graphs + analyze) | "
                    f"{fu['seconds']:.0f} s | largest process {fu['peak_mb']:.0f} MB | once per weights and machine |")
    rows.append(f"| image b1, reference (spec algorithm) | {ref['image_s']:.3f} s | 1.00 | |")
    # per image: the verdicts come from the paired rounds; each subject's time alone, minutes apart, beside
    pl = r["paired_latency"]
    for key, name, alone in (("library", f"library default ({lib['engine']})", lib["image_s"]),
                             ("host adapter", f"host adapter ({r['host']['engine']})", r["host"]["image_s"]),
                             ("server", "server `POST /analyze` (upload included)", r["server"]["image_s"])):
        x, diff = pl[key]["ratio"], pl[key]["max_abs_diff"]
        rows.append(f"| image b1, {name}, paired with the reference ({pl['rounds']} rounds) | {pl[key]['median_s']:.3f}"
                    f" vs {pl['reference_s']:.3f} s | {x:.2f}x, max diff {diff:.1e} (alone, minutes apart: "
                    f"{alone:.3f} s, {ref['image_s'] / alone:.2f}x) | {ok(x >= t['image_x'] and diff <= 1e-4)} |")
    ci = r["cold_image"]
    rows.append(f"| one image from nothing: `mffmoe analyze one.jpg` (wall: start-up, load, image) against a fresh "
                f"reference process ({len(ci['cli_s'])} rounds) | {statistics.median(ci['cli_s']):.2f} vs "
                f"{statistics.median(ci['reference_s']):.2f} s | {ci['ratio']:.2f}x | "
                f"{ok(ci['ratio'] >= t['image_x'])} |")
    many = lib["many"]
    rate = many["images"] / many["seconds"]
    mx = rate * ref["image_s"]
    rows.append(f"| 20 photos, `analyze_many` | {rate:.2f} images/s | {mx:.2f}x the reference's b1 rate | "
                f"{ok(mx >= t['many_x'])} (>= 2.2x) |")
    for key, name in (("short", "10 s"), ("long", "5 min")):
        c = r["cli"][f"video {name}, 16 frames, frame"]
        x = ref[key]["seconds"] / c["seconds"]
        rows.append(f"| `mffmoe analyze` {name} 1080p video, 16 frames (wall, load included) | {c['seconds']:.1f} s "
                    f"(reference {ref[key]['seconds']:.1f} s) | {x:.2f}x | {ok(x >= t['video_x'])} (>= 2.0x) |")
    # the real commands over many inputs: wall time, load included, against the reference's b1 rate (the
    # mean of its times before and after these rows, when both were measured: the VM's speed drifts)
    after = r.get("reference_after", {}).get("image_s")
    ref_s = (ref["image_s"] + after) / 2 if after else ref["image_s"]
    bracket = f" ({ref['image_s']:.2f} s before, {after:.2f} s after: mean)" if after else ""
    for name, n, c in (("`mffmoe analyze` 20 images, frame", 20, r["cli"]["20 images, frame"]),
                       ("`mffmoe analyze` video 100 frames, frame", 100, r["cli"]["video 100 frames, frame"]),
                       ("`mffmoe scan` 20 photos", 20, r["scan"])):
        x = n / c["seconds"] * ref_s
        rows.append(f"| {name} (wall, load included) | {n / c['seconds']:.2f} images/s | {x:.2f}x the reference's "
                    f"b1 rate{bracket} | {ok(x >= t['many_x'])} (>= 2.2x) |")
    length = r["cli"]["video 5 min, 16 frames, frame"]["seconds"] / r["cli"]["video 10 s, 16 frames, frame"]["seconds"]
    rows.append(f"| 5 min / 10 s, 16 frames | | {length:.2f} | {ok(length <= t['length_x'])} (<= 1.5) |")
    for name, c in r["cli"].items():
        rows.append(f"| peak RSS, `mffmoe analyze` {name} | {c['peak_mb']:.0f} MB ({c['seconds']:.1f} s) | | "
                    f"{ok(c['peak_mb'] <= t['rss_mb'])} (<= 1.1 GB) |")
    # a library caller or the host adapter keeps every expert compiled (resident), like the server
    rows.append(f"| peak RSS, library `Detector.from_dir` + image + 20 photos (resident) | {lib['peak_mb']:.0f} MB | "
                f"torch imported: {lib['torch_imported']} | {ok(lib['peak_mb'] <= t['rss_mb'])} |")
    hp = r["host"]["peak_mb"]
    rows.append(f"| peak RSS, host adapter (resident) | {hp:.0f} MB | | {ok(hp <= t['rss_mb'])} |")
    sv = r["server"]
    rows.append(f"| `mffmoe serve`: RSS once loaded | {sv['loaded_mb']:.0f} MB (ready in {sv['start_s']:.1f} s) | | "
                f"{ok(sv['loaded_mb'] <= t['rss_mb'])} |")
    rows.append(f"| `mffmoe serve`: peak with 4 requests at once (an image, a faces image, a video, a faces video) | "
                f"{sv['peak_mb']:.0f} MB (after: {sv['after_mb']:.0f}) | | {ok(sv['peak_mb'] <= t['rss_mb'])} |")
    rows.append(f"| `mffmoe scan` 20 photos: largest process | {r['scan']['peak_mb']:.0f} MB | | "
                f"{ok(r['scan']['peak_mb'] <= t['rss_mb'])} |")
    su = r["startup"]
    for key, name in (("help", "`mffmoe --help`"), ("missing", "missing input"), ("unreadable", "unreadable input")):
        rows.append(f"| start-up: {name} | {su[key]:.2f} s | | {ok(su[key] < t['startup_s'])} (< 1 s) |")
    rows.append("")
    rows.append(f"Load average before {r['load_before']}, after {r['load_after']}; {r['minutes']:.1f} min.")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
