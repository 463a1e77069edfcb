"""Contract tests of the HTTP service, in process (Starlette's TestClient runs the lifespan).

Every endpoint and every documented error, auth on and off, jobs and their persistence across a
restart, and temp-file clean-up. Streaming limits and load run against a real uvicorn in
test_server_live.py.
"""
from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mffmoe.config import DetectorConfig
from mffmoe.errors import ConfigError
from mffmoe.inference.batching import video_step
from mffmoe.inference.detector import Detector
from mffmoe.server.app import create_app
from mffmoe.server.models import JobRecord
from mffmoe.server.settings import ServerSettings
from mffmoe.server.store import JobStore
from mffmoe.testing.checkpoints import TINY_ROSTER
from mffmoe.testing.media import make_image
from server_helpers import (
    FACE_VIDEO_FRAMES,
    GatedDetector,
    HeldAfterFirstBatch,
    assert_error,
    checked_health,
    face_media,
    sample_media,
    tiny_detector,
    uploads_left,
    wait_until,
)

KEY = "k3y-\u00e9-secret"


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



def post_file(client, path: Path, endpoint: str = "/analyze", name: str | None = None, **fields):
    with open(path, "rb") as f:
        return client.post(endpoint, files={"media": (name or path.name, f.read())},
                           data={k: str(v) for k, v in fields.items()})


def wait_job(client, job_id: str, timeout: float = 20.0) -> dict:
    state: dict = {}

    def final() -> bool:
        state.update(client.get(f"/jobs/{job_id}").json())
        return state["status"] in ("done", "failed", "cancelled")

    wait_until(final, timeout)
    return state


# -- open endpoints ----------------------------------------------------------------------------------
def test_root_ping_and_page(client):
    root = client.get("/")
    assert root.status_code == 200 and root.json()["ui"] == "/ui" and root.json()["model"] == "MFF-MOE-V1"
    html = client.get("/", headers={"Accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html") and 'href="/ui"' in html.text
    assert client.get("/ping").json() == {"status": "ok"}
    page = client.get("/ui")
    assert page.status_code == 200 and 'id="drop"' in page.text
    for asset in ("/static/app.js", "/static/style.css", "/docs-assets/swagger-ui-bundle.js"):
        assert client.get(asset).status_code == 200, asset


def test_docs_and_openapi_are_offline(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "http://" not in docs.text and "https://" not in docs.text  # no CDN
    spec = client.get("/openapi.json").json()
    for path in ("/analyze", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/events", "/health", "/stats", "/models"):
        assert path in spec["paths"], path
    form = spec["paths"]["/analyze"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["media"] and {"model", "mediaId", "userId", "frames", "crop"} <= set(form["properties"])
    assert form["properties"]["crop"]["enum"] == ["frame", "faces", "auto"]
    jobs_form = spec["paths"]["/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert jobs_form == form and "422" in spec["paths"]["/jobs"]["post"]["responses"]
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])


def test_health_models_stats(client, detector, media):
    health = checked_health(client)  # the structural checks run in the background after start-up
    weights = health.pop("weights")
    assert health == {"status": "ok", "ready": True, "model": "MFF-MOE-V1", "engine": "torch", "device": "cpu",
                      "untrained": False}
    # the weights' structural checks, run at start-up (a failed one: tests/test_verify.py)
    assert weights["ok"] is True and [c["name"] for c in weights["checks"]] == [
        "readable MFF-MoE-v1.pth", "readable MFF-MoE-v1.state", "roster", "finite", "batchnorm variances",
        "EMA shadows"]
    assert {c["status"] for c in weights["checks"]} == {"pass"} and all(c["detail"] for c in weights["checks"])
    models = client.get("/models").json()
    assert models["default"] == "MFF-MOE-V1"
    (model,) = models["models"]
    assert model["roster"] == list(TINY_ROSTER) and model["input_size"] == 64 and model["ema"] is True
    assert post_file(client, media["image"]).status_code == 200
    assert post_file(client, media["png"], "/analyze", name="x.txt").status_code == 200  # type by content
    stats = client.get("/stats").json()
    assert stats["uptime_s"] > 0 and stats["requests_served"] >= 4
    assert stats["analyses"]["done"] == 2 and stats["latency_s"]["count"] == 2 and stats["latency_s"]["mean"] > 0
    assert stats["queue"] == {"depth": 0, "running": 0, "capacity": 5, "queue_size": 4, "workers": 1}
    assert stats["model"]["roster"] == list(TINY_ROSTER)


# -- /analyze ---------------------------------------------------------------------------------------
def test_analyze_image_matches_the_library(client, detector, media, settings):
    r = post_file(client, media["image"], model="MFF-MOE-V1", mediaId="m-1", userId="u-1")
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["model_used"] == "MFF-MOE-V1"
    datetime.fromisoformat(body["timestamp"])
    expected = detector.analyze(media["image"]).model_dump(mode="json")
    data = body["data"]
    assert data["media_type"] == "image" and data["dimensions"] == {"width": 160, "height": 120}
    for key in ("prediction", "score", "confidence", "expert_scores", "threshold"):
        assert data[key] == pytest.approx(expected[key], abs=1e-9), key
    assert uploads_left(settings) == []


def test_analyze_video_with_frames(client, detector, media, settings):
    r = post_file(client, media["video"], frames=7)
    assert r.status_code == 200
    data = r.json()["data"]
    expected = detector.analyze(media["video"], frames=7)
    assert data["media_type"] == "video" and data["frames_analyzed"] == 7 and len(data["frame_predictions"]) == 7
    assert data["score"] == pytest.approx(expected.score, abs=1e-9)
    assert [f["frame_index"] for f in data["frame_predictions"]] == [f.frame_index for f in expected.frame_predictions]
    assert data["metrics"]["final_average_score"] == pytest.approx(expected.metrics["final_average_score"])
    assert uploads_left(settings) == []


def _truncated(path: Path, out: Path, keep: int) -> Path:
    out.write_bytes(path.read_bytes()[:keep])
    return out


@pytest.mark.parametrize("case, status, kind", [
    ("empty", 400, "empty_file"),
    ("text", 415, "unsupported_media"),
    ("truncated_jpeg", 422, "undecodable_media"),
    ("truncated_mp4", 422, "undecodable_media"),
])
def test_bad_media_errors(client, media, settings, tmp_path, case, status, kind):
    files = {
        "empty": lambda: _truncated(media["image"], tmp_path / "empty.jpg", 0),
        "text": lambda: _write(tmp_path / "notes.jpg", b"just some text, not a picture\n" * 20),
        "truncated_jpeg": lambda: _truncated(media["image"], tmp_path / "cut.jpg", 400),
        "truncated_mp4": lambda: _truncated(media["video"], tmp_path / "cut.mp4", 64),
    }
    path = files[case]()
    for endpoint in ("/analyze",):
        detail = assert_error(post_file(client, path, endpoint), status, kind)
        assert str(settings.upload_dir) not in detail["message"]  # no server paths leak out
        assert path.name in detail["message"] or case == "empty"
    assert uploads_left(settings) == []
    assert client.get("/stats").json()["errors"][kind] == 1


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_decompression_bomb_is_422(detector, settings, tmp_path):
    small_limit = Detector(detector.engine, detector.info, max_image_pixels=1000)
    big = make_image(tmp_path / "big.png", 200, 200)
    with TestClient(create_app(small_limit, settings)) as c:
        assert_error(post_file(c, big), 422, "decompression_bomb")
    assert uploads_left(settings) == []


@pytest.mark.parametrize("kwargs, status, kind", [
    ({"files": {"model": (None, "MFF-MOE-V1")}}, 400, "missing_file"),
    ({"data": {"model": "MFF-MOE-V1"}}, 400, "invalid_request"),
    ({"json": {"media": "x"}}, 400, "invalid_request"),
    ({"files": {"other": ("a.jpg", b"123")}}, 400, "invalid_request"),
    ({"files": {"media": ("a.jpg", b"\xff\xd8\xff")}, "data": {"frames": "many"}}, 400, "invalid_request"),
    ({"files": {"media": ("a.jpg", b"\xff\xd8\xff")}, "data": {"frames": "0"}}, 400, "invalid_request"),
    ({"files": {"media": ("a.jpg", b"\xff\xd8\xff")}, "data": {"model": "other-model"}}, 400, "unknown_model"),
    ({"files": {"media": ("a.jpg", b"\xff\xd8\xff")}, "data": {"crop": "bogus"}}, 422, "unknown_crop"),
    ({"content": b"--b\r\nContent-Disposition: form-data; name=\"media\"; filename=\"a.jpg\"\r\n\r\n\xff\xd8\xff",
      "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 400, "invalid_request"),  # cut short
    ({"content": b"\x00garbage", "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 400,
     "invalid_request"),
])
def test_bad_forms(client, settings, kwargs, status, kind):
    assert_error(client.post("/analyze", **kwargs), status, kind)
    assert uploads_left(settings) == []


def test_model_name_variants_are_accepted(client, media):
    for name in ("MFF-MOE-V1", "mff-moe-v1", "MFF-MoE-V1"):
        assert post_file(client, media["png"], model=name).status_code == 200


def test_unknown_route_and_method_have_the_error_shape(client):
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.put("/analyze"), 405, "method_not_allowed")


def test_over_limit_upload_is_413(detector, settings, media):
    settings.max_upload_mb = 0.001  # ~1 KB: the sample image is larger
    with TestClient(create_app(detector, settings)) as c:
        assert_error(post_file(c, media["image"]), 413, "payload_too_large")
        assert_error(post_file(c, media["image"], "/jobs"), 413, "payload_too_large")
        huge = c.post("/analyze", content=b"x", headers={"Content-Type": "multipart/form-data; boundary=b",
                                                          "Content-Length": str(10**9)})
        assert_error(huge, 413, "payload_too_large")
    assert uploads_left(settings) == []


# -- crop: frame, faces, auto -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict[str, Path]:
    return face_media(tmp_path_factory.mktemp("faces"))


def _same_result(data: dict, expected: dict) -> None:
    """The library's result as served: equal but for the time it took."""
    assert {k: v for k, v in data.items() if k != "processing_time"} == \
           {k: v for k, v in expected.items() if k != "processing_time"}


def test_crop_faces_scores_each_face(client, detector, faces, settings):
    r = post_file(client, faces["faces"], crop="faces", model="MFF-MOE-V1", mediaId="m", userId="u")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["crop"] == "faces" and data["in_scope"] is True and len(data["faces"]) == 2
    assert data["score"] == max(f["score"] for f in data["faces"])
    for f in data["faces"]:
        x0, y0, x1, y1 = f["box"]
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480 and f["prediction"] in ("REAL", "FAKE")
    _same_result(data, detector.analyze(faces["faces"], crop="faces").model_dump(mode="json"))
    assert uploads_left(settings) == []


def test_without_the_crop_field_the_whole_frame_is_scored_as_before(client, detector, faces):
    data = post_file(client, faces["faces"], model="MFF-MOE-V1", mediaId="m", userId="u").json()["data"]
    assert data["crop"] == "frame" and data["in_scope"] is None and data["faces"] is None and data["note"] is None
    _same_result(data, detector.analyze(faces["faces"], crop="frame").model_dump(mode="json"))
    # the field, blank or in another case, means the same
    for same in ("", " Frame "):
        again = post_file(client, faces["faces"], crop=same).json()["data"]
        assert again["crop"] == "frame" and again["score"] == data["score"]


def test_crop_auto_without_a_face_scores_the_frame_and_says_so(client, detector, faces):
    data = post_file(client, faces["no_face"], crop="auto").json()["data"]
    assert data["crop"] == "frame" and data["in_scope"] is False and "no face" in data["note"]
    assert data["score"] == pytest.approx(detector.analyze(faces["no_face"], crop="frame").score, abs=1e-9)


@pytest.mark.parametrize("endpoint", ["/analyze", "/jobs"])
def test_unknown_crop_is_a_422_with_the_error_body(client, faces, settings, endpoint):
    r = post_file(client, faces["faces"], endpoint, crop="face")
    detail = assert_error(r, 422, "unknown_crop")
    assert "frame, faces, auto" in detail["message"] and "'face'" in detail["message"]
    assert uploads_left(settings) == []
    assert client.get("/stats").json()["analyses"]["done"] == 0  # nothing was queued


def test_jobs_follow_persons_through_a_video_in_faces_mode(client, detector, faces, settings):
    r = post_file(client, faces["video"], "/jobs", crop="faces", frames=FACE_VIDEO_FRAMES)
    assert r.status_code == 202, r.text
    final = wait_job(client, r.json()["job_id"], timeout=60)
    assert final["status"] == "done" and final["crop"] == "faces", final
    data = final["result"]["data"]
    assert data["crop"] == "faces" and data["in_scope"] is True
    counted = [p for p in data["persons"] if p["counted"]]
    assert len(counted) == 2 and data["score"] == max(p["score"] for p in counted)
    for p in counted:
        assert p["thumbnail"].startswith("data:image/jpeg;base64,") and len(p["timeline"]) == p["frames"]
    assert all(fp["faces"] is not None for fp in data["frame_predictions"])
    assert sum(len(fp["faces"]) for fp in data["frame_predictions"]) >= 2 * FACE_VIDEO_FRAMES - 2
    expected = detector.analyze(faces["video"], frames=FACE_VIDEO_FRAMES, crop="faces")
    assert data["score"] == pytest.approx(expected.score, abs=1e-9)
    # the frame the page shows for a point of the chart is kept, as in frame mode
    index = data["frame_predictions"][3]["frame_index"]
    assert client.get(f"/jobs/{final['job_id']}/frames/{index}").status_code == 200
    # without the field the job is scored on whole frames, and says which mode it asked for
    plain = wait_job(client, post_file(client, faces["video"], "/jobs", frames=4).json()["job_id"], timeout=60)
    assert plain["crop"] == "frame" and plain["result"]["data"]["persons"] is None
    assert uploads_left(settings) == []


def test_the_servers_crop_is_frame_unless_configured():
    assert ServerSettings().detector.crop == "frame"
    # as `mffmoe serve` builds it: a detector configuration that does not name a crop
    assert ServerSettings(detector=DetectorConfig(frames=5)).detector.crop == "frame"
    assert ServerSettings(detector=DetectorConfig(crop="auto")).detector.crop == "auto"
    assert ServerSettings(detector=DetectorConfig(crop=None)).detector.crop is None  # asked: the weights' own


def test_the_default_crop_is_the_servers_setting(detector, settings, faces):
    settings.detector = DetectorConfig(crop="auto")
    with TestClient(create_app(detector, settings)) as c:
        data = post_file(c, faces["faces"]).json()["data"]
        assert data["crop"] == "faces" and len(data["faces"]) == 2
        assert post_file(c, faces["faces"], crop="frame").json()["data"]["crop"] == "frame"


def test_a_job_database_from_before_the_crop_field_opens(settings):
    import sqlite3

    columns = ", ".join(f"{n} TEXT" + (" PRIMARY KEY" if n == "id" else "")
                        for n in JobRecord.model_fields if n != "crop")
    with sqlite3.connect(settings.db_path) as db:
        db.execute(f"CREATE TABLE jobs ({columns})")
        db.execute("INSERT INTO jobs (id, status, created, done) VALUES ('old', 'done', 1.7e9, 1)")
    store = JobStore(settings.db_path)
    try:
        old = store.get("old")
        assert old is not None and old.crop is None
        store.put(JobRecord(id="new", crop="faces"))
        assert store.get("new").crop == "faces"
    finally:
        store.close()


# -- auth -------------------------------------------------------------------------------------------
KEYED = [("GET", "/health"), ("GET", "/stats"), ("GET", "/metrics"), ("GET", "/models"), ("GET", "/openapi.json"),
         ("GET", "/jobs/abc"), ("GET", "/jobs/abc/events"), ("DELETE", "/jobs/abc"),
         ("POST", "/analyze"), ("POST", "/jobs")]
OPEN = ["/", "/ping", "/ui", "/docs", "/static/app.js", "/static/style.css", "/docs-assets/swagger-ui.css"]


def test_auth_required_when_key_set(detector, settings, media):
    settings.api_key = KEY
    with TestClient(create_app(detector, settings)) as c:
        for path in OPEN:
            assert c.get(path).status_code == 200, path
        for method, path in KEYED:
            kwargs = {"files": {"media": ("a.jpg", media["image"].read_bytes())}} if method == "POST" else {}
            for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1].encode()}):
                r = c.request(method, path, headers=headers, **kwargs)
                assert_error(r, 401, "unauthorized")
                assert r.headers["WWW-Authenticate"] == "X-API-Key"
        good = {"X-API-Key": KEY.encode()}
        for path in ("/health", "/stats", "/models", "/openapi.json"):
            assert c.get(path, headers=good).status_code == 200, path
        assert_error(c.get("/jobs/abc", headers=good), 404, "not_found")  # past auth
        with open(media["image"], "rb") as f:
            assert c.post("/analyze", headers=good, files={"media": ("a.jpg", f.read())}).status_code == 200
    assert uploads_left(settings) == []  # refused uploads were never written


def test_auth_off_without_key(client):
    for method, path in KEYED:
        if method == "GET" and "jobs" not in path:
            assert client.get(path).status_code == 200, path


def test_key_comes_from_environment(monkeypatch):
    monkeypatch.setenv("MFFMOE_API_KEY", "from-env")
    assert ServerSettings().api_key == "from-env"
    monkeypatch.delenv("MFFMOE_API_KEY")
    assert ServerSettings().api_key is None


# -- settings ---------------------------------------------------------------------------------------
def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MFFMOE_QUEUE_SIZE", "3")
    monkeypatch.setenv("MFFMOE_DETECTOR__FRAMES", "12")
    monkeypatch.setenv("MFFMOE_DETECTOR__DEVICE", "cpu")
    monkeypatch.setenv("MFFMOE_DB", str(tmp_path / "env.sqlite3"))
    monkeypatch.setenv("MFFMOE_WEIGHTS", str(tmp_path / "weights"))  # the loader's variable, not a settings field
    monkeypatch.setenv("MFFMOE_FRAMES", "999")  # no such variable: detector fields are read as DETECTOR__*
    settings = ServerSettings()
    assert settings.queue_size == 3 and settings.db_path == tmp_path / "env.sqlite3"
    assert settings.detector.frames == 12 and settings.detector.device == "cpu"
    assert settings.detector.weights is None
    given = ServerSettings(queue_size=5, frames=7, detector=DetectorConfig(engine="torch"))  # arguments win
    assert given.queue_size == 5 and given.detector.frames == 7 and given.detector.engine == "torch"
    assert given.detector.device == "auto"  # an explicit DetectorConfig replaces the environment's


def test_settings_validation_is_a_config_error(detector, settings):
    with pytest.raises(ConfigError, match="frames 200 is above max_frames 100"):
        ServerSettings(frames=200, max_frames=100)
    with pytest.raises(ConfigError, match="above max_frames"):
        ServerSettings(detector=DetectorConfig(frames=50), max_frames=10)
    with pytest.raises(ConfigError, match="queue_size"):
        ServerSettings(queue_size=-1)
    with pytest.raises(ConfigError, match="pooling"):
        ServerSettings(pooling="nope")
    with pytest.raises(ConfigError, match="weights_dir"):
        ServerSettings(weights_dir="x")  # a misspelt key is refused, not ignored
    assert ServerSettings(frames=100, max_frames=100).detector.frames == 100
    settings.max_frames = 10  # assignable, so create_app checks again
    with pytest.raises(ConfigError, match="above max_frames"):
        create_app(detector, settings)


# -- /metrics ---------------------------------------------------------------------------------------
def test_metrics_are_prometheus_text_over_the_stats_counters(client, media):
    assert post_file(client, media["image"]).status_code == 200
    assert_error(post_file(client, media["png"], model="other"), 400, "unknown_model")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['mffmoe_analyses_total{outcome="done"}'] == 1
    assert samples['mffmoe_analyses_total{outcome="rejected"}'] == 0
    assert samples['mffmoe_errors_total{kind="unknown_model"}'] == 1
    assert samples["mffmoe_analysis_latency_seconds_count"] == 1
    assert samples['mffmoe_http_responses_total{status="200"}'] >= 1
    assert samples["mffmoe_jobs_queued"] == 0 and samples["mffmoe_jobs_running"] == 0
    stats = client.get("/stats").json()
    assert stats["analyses"]["done"] == 1 and stats["errors"] == {"unknown_model": 1}
    assert stats["requests_by_status"]["200"] == samples['mffmoe_http_responses_total{status="200"}'] + 1


def test_each_app_counts_on_its_own(detector, settings, media):
    with TestClient(create_app(detector, settings)) as c:
        assert post_file(c, media["png"]).status_code == 200
    with TestClient(create_app(detector, settings)) as c:  # a second app in the same process starts at 0
        assert c.get("/stats").json()["analyses"]["done"] == 0
        assert 'mffmoe_analyses_total{outcome="done"} 0.0' in c.get("/metrics").text


# -- jobs -------------------------------------------------------------------------------------------
def read_events(client, job_id: str) -> list[tuple[str, dict]]:
    events, event = [], None
    with client.stream("GET", f"/jobs/{job_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    return events


def test_job_lifecycle_with_progress_events(client, detector, media, settings):
    r = post_file(client, media["video"], "/jobs", frames=20, mediaId="m-9", userId="u-9")
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    assert r.headers["Location"] == f"/jobs/{job_id}" and r.json()["links"]["events"] == f"/jobs/{job_id}/events"
    events = read_events(client, job_id)
    names = [e for e, _ in events]
    assert names[0] in ("status", "done") and names[-1] == "done" and names.count("done") == 1
    dones = [d["progress"]["done"] for _, d in events]
    assert dones == sorted(dones) and dones[-1] == 20
    final = events[-1][1]
    assert final["progress"] == {"done": 20, "total": 20, "fraction": 1.0}
    assert final["media_id"] == "m-9" and final["user_id"] == "u-9" and final["http_status"] == 200
    expected = detector.analyze(media["video"], frames=20)
    assert final["result"]["success"] is True
    assert final["result"]["data"]["score"] == pytest.approx(expected.score, abs=1e-9)
    assert client.get(f"/jobs/{job_id}").json() == final
    assert uploads_left(settings) == []


def test_failed_job_reports_the_error(client, settings, tmp_path, media):
    bad = _truncated(media["image"], tmp_path / "cut.jpg", 400)
    job_id = post_file(client, bad, "/jobs").json()["job_id"]
    state = wait_job(client, job_id)
    assert state["status"] == "failed" and state["http_status"] == 422
    assert state["error"]["error"] == "undecodable_media" and "cut.jpg" in state["error"]["message"]
    assert state["result"] is None
    assert read_events(client, job_id)[-1][0] == "failed"
    assert uploads_left(settings) == []


def test_job_type_errors_are_answered_at_submit(client, tmp_path, settings):
    assert_error(post_file(client, _write(tmp_path / "a.bin", b"\x00\x01" * 300), "/jobs"), 415,
                 "unsupported_media")
    assert_error(post_file(client, _write(tmp_path / "e.jpg", b""), "/jobs"), 400, "empty_file")
    assert uploads_left(settings) == []


def test_unknown_job_is_404(client):
    assert_error(client.get("/jobs/nope"), 404, "not_found")
    assert_error(client.get("/jobs/nope/events"), 404, "not_found")
    assert_error(client.delete("/jobs/nope"), 404, "not_found")


def test_queue_full_and_cancel(detector, settings, media):
    gated = GatedDetector(detector)
    settings.queue_size = 1
    try:
        with TestClient(create_app(gated, settings)) as c:
            running = post_file(c, media["image"], "/jobs").json()["job_id"]
            gated.wait_entered()
            queued = post_file(c, media["png"], "/jobs").json()["job_id"]
            assert c.get(f"/jobs/{queued}").json()["status"] == "queued"
            assert c.get(f"/jobs/{running}").json()["status"] == "running"
            for endpoint in ("/jobs", "/analyze"):
                r = post_file(c, media["image"], endpoint)
                assert_error(r, 503, "queue_full")
                assert int(r.headers["Retry-After"]) >= 1
            assert c.get("/stats").json()["queue"]["depth"] == 1
            assert len(uploads_left(settings)) == 2  # the two admitted uploads, nothing from the refused
            cancelled = c.delete(f"/jobs/{queued}").json()
            assert cancelled["status"] == "cancelled" and cancelled["error"]["error"] == "cancelled"
            assert len(uploads_left(settings)) == 1
            gated.gate.set()
            assert wait_job(c, running)["status"] == "done"
            stats = c.get("/stats").json()
            assert stats["analyses"] == {"done": 1, "failed": 0, "cancelled": 1, "rejected": 2}
    finally:
        gated.gate.set()
    assert uploads_left(settings) == []


# -- persistence --------------------------------------------------------------------------------------
def test_finished_jobs_survive_a_restart(detector, settings, media):
    with TestClient(create_app(detector, settings)) as c:
        job_id = post_file(c, media["image"], "/jobs").json()["job_id"]
        before = wait_job(c, job_id)
    assert before["status"] == "done"
    with TestClient(create_app(detector, settings)) as c:
        assert c.get(f"/jobs/{job_id}").json() == before
        assert read_events(c, job_id) == [("done", before)]


def test_unfinished_jobs_are_failed_after_a_crash(detector, settings):
    store = JobStore(settings.db_path)  # what a killed process leaves behind
    store.put(JobRecord(id="crashed", status="running", created=1.7e9, started=1.7e9, filename="v.mp4",
                        done=3, total=10))
    store.put(JobRecord(id="waiting", status="queued", created=1.7e9, filename="i.jpg", done=0))
    store.close()
    with TestClient(create_app(detector, settings)) as c:
        for job_id in ("crashed", "waiting"):
            state = c.get(f"/jobs/{job_id}").json()
            assert state["status"] == "failed" and state["http_status"] == 503, state
            assert state["error"]["error"] == "interrupted" and state["finished"] is not None


def test_shutdown_fails_queued_jobs_and_finishes_running_ones(detector, settings, media):
    gated = GatedDetector(detector)
    settings.queue_size = 2
    c = TestClient(create_app(gated, settings))
    c.__enter__()
    try:
        running = post_file(c, media["image"], "/jobs").json()["job_id"]
        gated.wait_entered()
        queued = post_file(c, media["png"], "/jobs").json()["job_id"]
    finally:
        threading.Timer(0.3, gated.gate.set).start()
        c.__exit__(None, None, None)
    with TestClient(create_app(detector, settings)) as c:
        assert c.get(f"/jobs/{running}").json()["status"] == "done"
        state = c.get(f"/jobs/{queued}").json()
        assert state["status"] == "failed" and state["error"]["error"] == "interrupted"
    assert uploads_left(settings) == []


def test_shutdown_interrupts_a_running_video(detector, settings, media):
    held = HeldAfterFirstBatch(detector)
    c = TestClient(create_app(held, settings))
    c.__enter__()
    try:
        job_id = post_file(c, media["video"], "/jobs", frames=20).json()["job_id"]
        assert held.reported.wait(20)
        # one call scored: 20 frames at batch 8 go in three equal calls (`video_step`: 7, 7, 6)
        assert c.get(f"/jobs/{job_id}").json()["progress"]["done"] == video_step(20, 8, detector.engine) == 7
    finally:
        threading.Timer(0.3, held.gate.set).start()
        c.__exit__(None, None, None)  # shutdown: the video stops at its next batch
    with TestClient(create_app(detector, settings)) as c:
        state = c.get(f"/jobs/{job_id}").json()
        assert state["status"] == "failed" and state["http_status"] == 503 and state["result"] is None
        assert state["error"]["error"] == "interrupted"
    assert uploads_left(settings) == []


# -- start-up ---------------------------------------------------------------------------------------
def test_app_loads_weights_from_settings(settings, tmp_path, media):
    from mffmoe.testing.checkpoints import make_random_checkpoint

    make_random_checkpoint(tmp_path / "weights", TINY_ROSTER, input_size=64, layout="upstream")
    settings.detector = DetectorConfig(weights=tmp_path / "weights", device="cpu")
    app = create_app(settings=settings)
    assert_error(TestClient(app).get("/ping"), 503, "not_ready")  # no lifespan yet: no model
    with TestClient(app) as c:
        assert c.get("/ping").status_code == 200
        (model,) = c.get("/models").json()["models"]
        assert model["roster"] == list(TINY_ROSTER) and model["layout"] == "upstream" and model["ema"] is True
        assert post_file(c, media["png"]).status_code == 200
