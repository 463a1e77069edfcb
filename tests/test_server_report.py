"""`GET /jobs/{id}/report`: a finished job's evidence report as JSON (the signed layout, verifiable
against the uploaded bytes), self-contained HTML and PDF; typed errors for an unknown job, an unfinished
one, an unknown format, and a job of `POST /analyze` (not kept)."""
from __future__ import annotations

import hashlib
import threading

import pytest
from fastapi.testclient import TestClient

from mffmoe.report.sign import verify
from mffmoe.server.app import create_app
from mffmoe.server.settings import ServerSettings
from server_helpers import HeldAfterFirstBatch, assert_error, sample_media, tiny_detector, wait_until


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return tiny_detector(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return sample_media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def client(detector, tmp_path):
    settings = ServerSettings(db_path=tmp_path / "jobs.sqlite3", upload_dir=tmp_path / "uploads", queue_size=4,
                              api_key=None)
    with TestClient(create_app(detector, settings)) as c:
        yield c


def finished_job(client, path, **fields) -> str:
    with open(path, "rb") as f:
        job_id = client.post("/jobs", files={"media": (path.name, f.read())}, data=fields).json()["job_id"]
    wait_until(lambda: client.get(f"/jobs/{job_id}").json()["status"] == "done", 30)
    return job_id


def test_a_finished_jobs_report_in_every_format(client, media):
    job_id = finished_job(client, media["image"])
    r = client.get(f"/jobs/{job_id}/report", params={"format": "json"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    report = r.json()
    data = media["image"].read_bytes()
    assert report["input"]["sha256"] == hashlib.sha256(data).hexdigest() and report["input"]["size"] == len(data)
    assert report["input"]["name"] == media["image"].name  # the client's name, not the upload's temporary one
    assert report["result"]["score"] == client.get(f"/jobs/{job_id}").json()["result"]["data"]["score"]
    assert report["provenance"]["summary"] == "no provenance found"
    check = verify(r.content, input_file=media["image"])  # unsigned, but in the layout a signature covers
    assert check.reason == "unsigned"
    html = client.get(f"/jobs/{job_id}/report?format=html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "no provenance found" in html.text.lower() and report["input"]["sha256"] in html.text
    assert "attachment" in html.headers["content-disposition"]
    pdf = client.get(f"/jobs/{job_id}/report?format=pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_report_errors_are_typed(client, media, detector, tmp_path):
    assert_error(client.get("/jobs/nosuchjob/report"), 404, "not_found")
    job_id = finished_job(client, media["image"])
    assert_error(client.get(f"/jobs/{job_id}/report?format=docx"), 422, "unknown_format")
    held = HeldAfterFirstBatch(detector)
    settings = ServerSettings(db_path=tmp_path / "held.sqlite3", upload_dir=tmp_path / "up2", queue_size=4,
                              api_key=None)
    with TestClient(create_app(held, settings)) as c:
        with open(media["video"], "rb") as f:
            running = c.post("/jobs", files={"media": ("v.mp4", f.read())}, data={"frames": "20"}).json()["job_id"]
        assert held.reported.wait(20)
        assert_error(c.get(f"/jobs/{running}/report"), 409, "not_finished")
        threading.Timer(0.1, held.gate.set).start()


def test_an_explained_jobs_report_has_its_heatmaps_though_the_upload_is_gone(client, media):
    """The page is made when the job ends, while the upload is there to draw the maps on."""
    job_id = finished_job(client, media["image"], explain="true", explain_method="occlusion")
    html = client.get(f"/jobs/{job_id}/report?format=html").text
    section = html[html.index('<h2 id="heatmaps">'):]
    assert "not available" not in section.split("<h2", 2)[1]
    assert '<figure><img alt="' in section and 'src="data:image/' in section
    assert client.get(f"/jobs/{job_id}/report?format=pdf").content.startswith(b"%PDF")
