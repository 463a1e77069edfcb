"""The host backend's client, replayed against a live server (uvicorn on 127.0.0.1, a key set).

What the host's Node client does, step by step (docs/server.md, "The host contract"): `GET /stats`
with `X-API-Key`, pick the models to run from `models_info[]`, then `POST /analyze` with `media` (a PNG;
an H.264/AAC MP4 named `<ms>-<name>.mp4`) and the text fields `model`, `mediaId`, `userId`. Every field
it reads is checked with the type it reads it as, and every error must give it a message by its
extraction order. Also here: the stored frame thumbnails the web page's chart shows.
"""
from __future__ import annotations

import io
import math
import time
import uuid
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mffmoe.inference.detector import Detector
from mffmoe.server import thumbnails
from mffmoe.server.app import create_app
from mffmoe.server.settings import ServerSettings
from mffmoe.testing.media import make_image, pattern
from server_helpers import live_server, tiny_detector, wait_until

KEY = "host-key"
HOST_STATS_TIMEOUT = 20.0
HOST_ANALYZE_TIMEOUT = 20 * 60.0
FRAMES = 12  # in the MP4; the host sends no `frames`, so all are sampled (the default is 100)


def encode_av_mp4(path: Path, seconds: float = 1.0, fps: int = 12, size: tuple[int, int] = (96, 64)) -> Path:
    """An MP4 as the host uploads one: H.264 video (PyAV's libx264) plus an AAC audio track."""
    import av

    width, height = size
    with av.open(str(path), mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=Fraction(fps))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = out.add_stream("aac", rate=44100)
        audio.layout = "mono"
        for i in range(round(seconds * fps)):
            for packet in video.encode(av.VideoFrame.from_ndarray(pattern(width, height, t=i), format="rgb24")):
                out.mux(packet)
        samples, chunk = round(seconds * 44100), 1024
        for start in range(0, samples, chunk):
            t = np.arange(start, min(samples, start + chunk)) / 44100
            tone = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            for packet in audio.encode(frame):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)
    with av.open(str(path)) as check:
        assert [s.codec_context.name for s in check.streams] == ["h264", "aac"]
    return path


def host_message(body: object) -> str | None:
    """The host client's rule: `detail` as a string, else `detail.message`, else `message`, else `detail.error`."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, dict) and isinstance(detail.get("message"), str) and detail["message"]:
        return detail["message"]
    if isinstance(body.get("message"), str) and body["message"]:
        return body["message"]
    if isinstance(detail, dict) and isinstance(detail.get("error"), str) and detail["error"]:
        return detail["error"]
    return None


def pick_models(stats: dict, *, video: bool, audio: bool) -> list[str]:
    """The models the host would queue for one upload, as its client chooses them."""
    chosen = []
    for m in stats.get("models_info") or []:
        if m.get("loaded") is not True:
            continue
        if m.get("isMultiModal") is True:
            if video and audio:
                chosen.append(m["name"])
        elif (m.get("isVideo") is True) if video else (m.get("isImage") is True):
            chosen.append(m["name"])
    return chosen


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    return tiny_detector(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("host-media")
    stamp = int(time.time() * 1000)
    return {"png": make_image(d / f"{stamp}-photo.png", 120, 90, seed=4),
            "mp4": encode_av_mp4(d / f"{stamp}-clip.mp4")}


@pytest.fixture
def settings(tmp_path) -> ServerSettings:
    return ServerSettings(db_path=tmp_path / "jobs.sqlite3", upload_dir=tmp_path / "uploads", api_key=KEY)


def check_stats(stats: dict) -> None:
    assert stats["status"] == "running"
    assert isinstance(stats["uptime_seconds"], int | float) and stats["uptime_seconds"] > 0
    dev = stats["device_info"]
    assert dev["type"] == "cpu" and isinstance(dev["name"], str) and dev["name"] and dev["cuda_version"] is None
    sysinfo = stats["system_info"]
    assert isinstance(sysinfo["platform"], str) and sysinfo["platform"]
    assert isinstance(sysinfo["python_version"], str) and sysinfo["python_version"].count(".") == 2
    for block, used, total, percent in ((dev, "used_memory", "total_memory", "memory_usage_percent"),
                                        (sysinfo, "used_ram", "total_ram", "ram_usage_percent")):
        assert all(isinstance(block[k], int | float) and not isinstance(block[k], bool) for k in (used, total, percent))
        assert 0 < block[used] <= block[total] and 0 < block[percent] <= 100
        assert block[percent] == pytest.approx(100 * block[used] / block[total], abs=0.5)
    (model,) = stats["models_info"]
    assert model["name"] == "MFF-MOE-V1" and isinstance(model["description"], str) and model["description"]
    assert model["device"] == "cpu" and model["loaded"] is True
    assert (model["isImage"], model["isVideo"], model["isAudio"], model["isMultiModal"]) == (True, True, False, False)
    # What /stats had before the host's fields is all still there.
    assert {"uptime_s", "requests_served", "analyses", "queue", "model"} <= set(stats)


def check_result(body: dict, media_type: str) -> dict:
    assert body["success"] is True
    data = body["data"]
    assert data["prediction"] in ("REAL", "FAKE")
    assert isinstance(data["confidence"], float) and 0 <= data["confidence"] <= 1
    assert isinstance(data["processing_time"], float) and data["processing_time"] > 0
    assert data["media_type"] == media_type
    assert "note" in data and (data["note"] is None or isinstance(data["note"], str))
    return data


def test_the_hosts_client_gets_every_field_it_reads(detector, settings, uploads):
    with live_server(create_app(detector, settings)) as url, httpx.Client(base_url=url) as host:
        key = {"X-API-Key": KEY}
        stats = host.get("/stats", headers=key, timeout=HOST_STATS_TIMEOUT)
        assert stats.status_code == 200, stats.text
        check_stats(stats.json())

        for kind, media_type in (("png", "image"), ("mp4", "video")):
            chosen = pick_models(stats.json(), video=kind == "mp4", audio=kind == "mp4")
            assert chosen == ["MFF-MOE-V1"], chosen
            path = uploads[kind]
            with open(path, "rb") as f:
                r = host.post("/analyze", headers=key, timeout=HOST_ANALYZE_TIMEOUT,
                              files={"media": (path.name, f, "video/mp4" if kind == "mp4" else "image/png")},
                              data={"model": chosen[0], "mediaId": str(uuid.uuid4()), "userId": str(uuid.uuid4())})
            assert r.status_code == 200, r.text
            data = check_result(r.json(), media_type)
            if media_type == "image":
                assert data["dimensions"] == {"width": 120, "height": 90}
                continue
            assert data["frames_analyzed"] == data["frame_count"] == FRAMES
            frames = data["frame_predictions"]
            assert [f["index"] for f in frames] == list(range(FRAMES))
            for f in frames:
                assert isinstance(f["score"], float) and 0 <= f["score"] <= 1
                assert f["prediction"] == ("FAKE" if f["score"] >= 0.5 else "REAL")
            (average,) = [k for k in data["metrics"] if "average" in k and "score" in k]
            assert data["metrics"][average] == pytest.approx(np.mean([f["score"] for f in frames]), abs=1e-6)
            assert data["prediction"] == ("FAKE" if data["metrics"][average] >= 0.5 else "REAL")


def test_every_error_gives_the_host_a_message(detector, settings, uploads, tmp_path):
    text = tmp_path / f"{int(time.time() * 1000)}-notes.png"
    text.write_bytes(b"not a picture at all " * 20)
    form = {"model": "MFF-MOE-V1", "mediaId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
    with live_server(create_app(detector, settings)) as url, httpx.Client(base_url=url, timeout=60) as host:
        key = {"X-API-Key": KEY}
        cases = [
            (host.get("/stats"), 401),
            (host.get("/stats", headers={"X-API-Key": "wrong"}), 401),
            (host.post("/analyze", headers=key, data=form,
                       files={"media": (text.name, text.read_bytes(), "image/png")}), 415),
            (host.post("/analyze", headers=key, data={**form, "model": "OTHER-MODEL"},
                       files={"media": (uploads["png"].name, uploads["png"].read_bytes(), "image/png")}), 400),
            (host.post("/analyze", headers=key, data=form), 400),  # no media part
        ]
        for r, status in cases:
            assert r.status_code == status, r.text
            message = host_message(r.json())
            assert message and message == r.json()["detail"]["message"], r.text


def test_a_video_job_keeps_thumbnails_of_its_scored_frames(detector, settings, uploads):
    key = {"X-API-Key": KEY}
    with TestClient(create_app(detector, settings)) as c:
        with open(uploads["mp4"], "rb") as f:
            job_id = c.post("/jobs", headers=key, files={"media": ("clip.mp4", f)}).json()["job_id"]
        state: dict = {}
        wait_until(lambda: state.update(c.get(f"/jobs/{job_id}", headers=key).json()) or state["status"] == "done",
                   timeout=30)
        frames = state["result"]["data"]["frame_predictions"]
        for fp in frames:
            r = c.get(f"/jobs/{job_id}/frames/{fp['frame_index']}", headers=key)
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            image = Image.open(io.BytesIO(r.content))
            assert image.format == "JPEG" and max(image.size) <= thumbnails.SIZE and image.size == (96, 64)
        assert c.get(f"/jobs/{job_id}/frames/{frames[0]['frame_index']}").status_code == 401
        missing = c.get(f"/jobs/{job_id}/frames/99999", headers=key)
        assert missing.status_code == 404 and host_message(missing.json())
        assert c.get(f"/jobs/{'0' * 32}/frames/0", headers=key).status_code == 404
        # An image job has none; /analyze (the host's path) stores nothing.
        with open(uploads["png"], "rb") as f:
            image_job = c.post("/jobs", headers=key, files={"media": ("a.png", f)}).json()["job_id"]
        wait_until(lambda: c.get(f"/jobs/{image_job}", headers=key).json()["status"] == "done", timeout=30)
        assert c.get(f"/jobs/{image_job}/frames/0", headers=key).status_code == 404
    root = thumbnails.folder(settings.db_path)
    # each stored job keeps its report there too (`GET /jobs/{id}/report`); the image job nothing else
    assert root is not None and sorted(p.name for p in root.iterdir()) == sorted([job_id, image_job])
    assert sorted(p.name for p in (root / image_job).iterdir()) == ["report.html", "report.json"]

    # Removed with the job: a restart that purges the job purges its thumbnails too.
    (root / ".half-written.partial").mkdir()
    settings.job_ttl_hours = 1e-9
    with TestClient(create_app(detector, settings)) as c:
        assert c.get(f"/jobs/{job_id}", headers=key).status_code == 404
    assert list(root.iterdir()) == []


def test_thumbnails_spread_evenly():
    assert thumbnails.spread(list(range(5)), 10) == [0, 1, 2, 3, 4]
    picked = thumbnails.spread(list(range(1000)), thumbnails.MAX_PER_JOB)
    assert len(picked) == thumbnails.MAX_PER_JOB and picked[0] == 0 and picked[-1] == 999
    assert thumbnails.folder(Path(":memory:")) is None


def test_device_info_on_a_gpu_reads_the_gpus_own_memory(monkeypatch):
    """No GPU here: torch.cuda's answers are stood in for, to check the shape and the arithmetic."""
    import torch

    from mffmoe.server import hostinfo

    gib = hostinfo.GIB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (30 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    info = hostinfo.device_info("cuda:0")
    assert info == {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "cuda_version": "12.4", "used_memory": 50.0,
                    "total_memory": 80.0, "memory_usage_percent": 62.5}
