"""Explanations through the service: the `explain*` form fields of POST /jobs and POST /analyze, the
result's `explanation`, the job's stage while it is made, thumbnails of explained video frames, and an
explanation that fails (the job still succeeds, the note says why). A tiny random roster, so occlusion
and Grad-CAM are fast."""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mffmoe.errors import ConfigError
from mffmoe.explain.base import WHAT_A_MAP_IS
from mffmoe.inference.detector import Detector
from mffmoe.server.app import create_app
from mffmoe.server.settings import ServerSettings
from server_helpers import FACE_VIDEO_FRAMES, assert_error, face_media, sample_media, tiny_detector, wait_until


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    return tiny_detector(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return sample_media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def settings(tmp_path) -> ServerSettings:
    return ServerSettings(db_path=tmp_path / "jobs.sqlite3", upload_dir=tmp_path / "uploads", queue_size=4,
                          api_key=None)


@pytest.fixture
def client(detector, settings):
    with TestClient(create_app(detector, settings)) as c:
        yield c


def post_file(client, path: Path, endpoint: str = "/jobs", **fields):
    with open(path, "rb") as f:
        return client.post(endpoint, files={"media": (path.name, f.read())},
                           data={k: str(v) for k, v in fields.items()})


def wait_job(client, job_id: str, timeout: float = 30.0) -> dict:
    state: dict = {}

    def final() -> bool:
        state.update(client.get(f"/jobs/{job_id}").json())
        return state["status"] in ("done", "failed", "cancelled")

    wait_until(final, timeout)
    return state


def assert_maps(explanation: dict, method: str) -> None:
    assert explanation["method"] == method and explanation["note"] == WHAT_A_MAP_IS
    assert explanation["items"]
    for item in explanation["items"]:
        m = np.asarray(item["map"])
        assert m.shape == (32, 32) and m.min() >= 0 and m.max() <= 1
        assert len(item["box"]) == 4 and item["method"] == method


@pytest.mark.parametrize("method", ["occlusion", "gradcam"])
def test_an_image_job_with_explain_carries_its_maps(client, media, method):
    r = post_file(client, media["image"], explain="true", explain_method=method)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"])
    assert job["status"] == "done", job
    assert job["explain"]["method"] == method and job["explain"]["out_dir"] is None
    assert job["progress"] == {"done": 1, "total": 1, "fraction": 1.0} and job["stage"] is None
    data = job["result"]["data"]
    assert_maps(data["explanation"], method)
    (item,) = data["explanation"]["items"]
    assert item["kind"] == "frame" and item["box"] == [0, 0, 160, 120]
    assert item["score"] == pytest.approx(data["score"])


def test_analyze_explains_and_stays_the_host_contract_without_it(client, detector, media):
    plain = post_file(client, media["image"], "/analyze")
    assert plain.status_code == 200
    body = plain.json()
    assert body["data"]["explanation"] is None  # without explain nothing changes
    expected = detector.analyze(media["image"]).model_dump(mode="json")
    for key in ("prediction", "confidence", "score", "expert_scores", "dimensions"):
        assert body["data"][key] == expected[key]
    off = post_file(client, media["image"], "/analyze", explain="no", explain_method="occlusion")
    assert off.status_code == 200 and off.json()["data"]["explanation"] is None
    on = post_file(client, media["image"], "/analyze", explain="1", explain_method="occlusion", explain_experts="yes")
    assert on.status_code == 200, on.text
    data = on.json()["data"]
    assert_maps(data["explanation"], "occlusion")
    assert [e["expert"] for e in data["explanation"]["items"][0]["experts"]] == data["explanation"]["roster"]
    assert data["score"] == body["data"]["score"]  # the score never changes


def test_a_video_job_explains_its_frames_and_keeps_their_pictures(client, media):
    r = post_file(client, media["video"], frames=6, explain="true", explain_method="occlusion", explain_frames=2)
    job = wait_job(client, r.json()["job_id"], timeout=60)
    assert job["status"] == "done", job
    explanation = job["result"]["data"]["explanation"]
    assert_maps(explanation, "occlusion")
    indices = {it["frame_index"] for it in explanation["items"]}
    assert len(indices) == 2
    sampled = {f["frame_index"] for f in job["result"]["data"]["frame_predictions"]}
    assert indices <= sampled
    for index in indices:  # the page draws each map on its frame's picture
        picture = client.get(f"/jobs/{job['job_id']}/frames/{index}")
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"


def test_faces_are_explained_by_their_crop_squares(client, tmp_path):
    faces = face_media(tmp_path / "faces")
    image = wait_job(client, post_file(client, faces["faces"], crop="faces", explain="true",
                                       explain_method="occlusion").json()["job_id"], timeout=60)
    data = image["result"]["data"]
    assert data["crop"] == "faces" and len(data["faces"]) == 2
    assert_maps(data["explanation"], "occlusion")
    items = data["explanation"]["items"]
    assert [it["kind"] for it in items] == ["face", "face"] and [it["face"] for it in items] == [0, 1]
    assert [it["box"] for it in items] == [f["crop_box"] for f in data["faces"]]
    video = wait_job(client, post_file(client, faces["video"], crop="faces", frames=FACE_VIDEO_FRAMES, explain="yes",
                                       explain_method="occlusion", explain_frames=1).json()["job_id"], timeout=90)
    data = video["result"]["data"]
    (index,) = {it["frame_index"] for it in data["explanation"]["items"]}
    frame = next(f for f in data["frame_predictions"] if f["frame_index"] == index)
    assert frame["score"] == max(f["score"] for f in data["frame_predictions"])  # the most suspicious
    assert [it["box"] for it in data["explanation"]["items"]] == [f["crop_box"] for f in frame["faces"]]
    assert client.get(f"/jobs/{video['job_id']}/frames/{index}").status_code == 200


@pytest.mark.parametrize(("fields", "status", "kind"), [
    ({"explain": "maybe"}, 400, "invalid_request"),
    ({"explain": "true", "explain_frames": "0"}, 400, "invalid_request"),
    ({"explain": "true", "explain_frames": "33"}, 400, "invalid_request"),
    ({"explain": "true", "explain_frames": "three"}, 400, "invalid_request"),
    ({"explain": "true", "explain_experts": "sometimes"}, 400, "invalid_request"),
    ({"explain": "true", "explain_method": "lime"}, 422, "unknown_explain_method"),
    ({"explain_method": "lime"}, 422, "unknown_explain_method"),  # checked even without explain
])
@pytest.mark.parametrize("endpoint", ["/jobs", "/analyze"])
def test_bad_explain_fields_are_refused(client, media, settings, endpoint, fields, status, kind):
    detail = assert_error(post_file(client, media["png"], endpoint, **fields), status, kind)
    assert detail["message"]
    assert sorted(settings.upload_dir.glob("*")) == []  # the upload is gone


def test_the_form_is_documented(client):
    spec = client.get("/openapi.json").json()
    for path in ("/analyze", "/jobs"):
        form = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        props = form["properties"]
        assert {"explain", "explain_frames", "explain_experts", "explain_method"} <= set(props)
        assert props["explain_method"]["enum"] == ["auto", "gradcam", "occlusion"]
        assert WHAT_A_MAP_IS in props["explain"]["description"]
        assert form["required"] == ["media"]


def test_a_failed_explanation_keeps_the_job(client, media, monkeypatch):
    import mffmoe.explain.explainer as explainer

    def typed(*args, **kwargs):
        raise ConfigError("no torch model here")

    monkeypatch.setattr(explainer, "explain_result", typed)
    job = wait_job(client, post_file(client, media["image"], explain="true").json()["job_id"])
    assert job["status"] == "done" and job["result"]["data"]["explanation"] is None
    assert "no explanation: no torch model here" in job["result"]["data"]["note"]

    def bug(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(explainer, "explain_result", bug)
    r = post_file(client, media["image"], "/analyze", explain="true")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["explanation"] is None and "internal error (RuntimeError: boom)" in r.json()["data"]["note"]


def test_an_explaining_job_does_not_look_finished(client, media, monkeypatch):
    import mffmoe.explain.explainer as explainer

    real, gate, entered = explainer.explain_result, threading.Event(), threading.Event()

    def held(*args, **kwargs):
        entered.set()
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(explainer, "explain_result", held)
    job_id = post_file(client, media["image"], explain="true", explain_method="occlusion").json()["job_id"]
    assert entered.wait(30)
    try:
        running = client.get(f"/jobs/{job_id}").json()
        assert running["status"] == "running" and running["result"] is None
        assert running["stage"] == "explaining" and running["progress"]["fraction"] is None
    finally:
        gate.set()
    done = wait_job(client, job_id)
    assert done["status"] == "done" and done["result"]["data"]["explanation"] is not None


def test_the_options_are_stored_and_an_old_database_gains_the_column(detector, media, settings):
    # a database made before the field existed: the column is added on opening
    settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    with TestClient(create_app(detector, settings)) as c:
        job_id = wait_job(c, post_file(c, media["png"], explain="on", explain_method="occlusion",
                                       explain_frames=5).json()["job_id"])["job_id"]
    db = sqlite3.connect(settings.db_path)
    stored = json.loads(db.execute("SELECT explain FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
    assert stored == {"method": "occlusion", "frames": 5, "experts": False, "out_dir": None}
    db.execute("ALTER TABLE jobs DROP COLUMN explain")
    db.commit()
    db.close()
    with TestClient(create_app(detector, settings)) as c:  # restarted on the old table
        old = c.get(f"/jobs/{job_id}").json()
        assert old["status"] == "done" and old["explain"] is None
        again = wait_job(c, post_file(c, media["png"], explain="true", explain_method="occlusion").json()["job_id"])
        assert again["explain"]["method"] == "occlusion"


def test_the_event_stream_says_when_the_explanation_starts(client, media, monkeypatch):
    import mffmoe.explain.explainer as explainer

    real, gate = explainer.explain_result, threading.Event()

    def held(*args, **kwargs):
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(explainer, "explain_result", held)
    job_id = post_file(client, media["image"], explain="true", explain_method="occlusion").json()["job_id"]
    fallback = threading.Timer(15, gate.set)  # never hangs: the assertions below then fail instead
    fallback.start()
    events: list[tuple[str, dict]] = []
    try:
        with client.stream("GET", f"/jobs/{job_id}/events") as stream:
            name = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    name = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    data = json.loads(line.removeprefix("data:"))
                    events.append((name or "message", data))
                    if data["stage"] == "explaining":
                        gate.set()
    finally:
        fallback.cancel()
        gate.set()
    explaining = [(n, d) for n, d in events if d["stage"] == "explaining"]
    assert explaining and all(d["status"] == "running" and d["result"] is None for _, d in explaining)
    assert events[-1][0] == "done" and events[-1][1]["stage"] is None
    assert events[-1][1]["result"]["data"]["explanation"] is not None
