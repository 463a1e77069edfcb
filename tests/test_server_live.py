"""The service under a real uvicorn on 127.0.0.1: limits enforced while streaming, clean-up when a
client goes away, the queue under concurrent load, and `mffmoe serve` itself.

All traffic stays on the loopback interface; every loop is bounded in count and time.
"""
from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mffmoe.server.app import create_app
from mffmoe.server.settings import ServerSettings
from server_helpers import GatedDetector, live_server, sample_media, tiny_detector, uploads_left, wait_until

BOUNDARY = b"mffmoe-test-boundary"


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return tiny_detector(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return sample_media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def settings(tmp_path) -> ServerSettings:
    return ServerSettings(db_path=tmp_path / "jobs.sqlite3", upload_dir=tmp_path / "uploads", api_key=None)



class RawUpload:
    """A hand-driven chunked multipart POST, so a test controls exactly how much of the body is sent."""

    def __init__(self, base_url: str, path: str = "/analyze", filename: str = "big.mp4") -> None:
        host, port = base_url.rsplit("//", 1)[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
                          b"\r\nContent-Type: multipart/form-data; boundary=" + BOUNDARY +
                          b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.chunk(b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="media"; filename="' +
                   filename.encode() + b'"\r\nContent-Type: application/octet-stream\r\n\r\n')

    def chunk(self, data: bytes) -> None:
        self.sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

    def finish(self) -> None:
        self.chunk(b"\r\n--" + BOUNDARY + b"--\r\n")
        self.sock.sendall(b"0\r\n\r\n")

    def answered(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def status(self) -> int:
        head = self.sock.recv(65536)
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        self.sock.close()


# -- limits and clean-up -------------------------------------------------------------------------------
def test_413_is_decided_while_the_body_streams(detector, settings):
    settings.max_upload_mb = 1
    planned = 256 * 2**20
    with live_server(create_app(detector, settings)) as url:
        up = RawUpload(url)
        sent, block, reset = 0, b"\0" * 65536, False
        while sent < planned and not up.answered():
            try:
                up.chunk(block)
            except (ConnectionResetError, BrokenPipeError):  # refused and closed between two looks
                reset = True
                break
            sent += len(block)
        try:
            status = up.status()
        except ConnectionResetError:  # the reset may discard the answer from the socket: ask the counters
            assert reset
            status = 413 if httpx.get(f"{url}/stats").json()["requests_by_status"].get("413") else 0
        assert status == 413
        up.close()
        # The answer came after ~1 MB plus socket buffers, long before the 256 MB were sent.
        assert sent < 32 * 2**20, sent
        wait_until(lambda: not uploads_left(settings), timeout=5)


def test_declared_oversize_body_is_refused_before_reading(detector, settings):
    settings.max_upload_mb = 1
    with live_server(create_app(detector, settings)) as url:
        r = httpx.post(f"{url}/analyze", content=b"",
                       headers={"Content-Type": "multipart/form-data; boundary=x", "Content-Length": "0"})
        assert r.status_code == 400
        host, port = url.rsplit("//", 1)[1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         b"Content-Length: 5000000000\r\n\r\n")  # 5 GB announced, nothing sent
            assert sock.recv(65536).startswith(b"HTTP/1.1 413")
    assert not uploads_left(settings)


def test_client_gone_mid_upload_leaves_no_file(detector, settings):
    with live_server(create_app(detector, settings)) as url:
        up = RawUpload(url)
        for _ in range(8):
            up.chunk(b"\1" * 65536)
        wait_until(lambda: len(uploads_left(settings)) == 1, timeout=5)  # it is being written
        up.close()
        wait_until(lambda: not uploads_left(settings), timeout=5)
        assert httpx.get(f"{url}/ping").status_code == 200


def test_client_gone_while_queued_cancels_the_job(detector, settings, media):
    gated = GatedDetector(detector)
    settings.queue_size = 2
    try:
        with live_server(create_app(gated, settings)) as url, httpx.Client(base_url=url, timeout=30) as c:
            busy = c.post("/jobs", files={"media": ("a.jpg", media["image"].read_bytes())}).json()["job_id"]
            gated.wait_entered()
            up = RawUpload(url, filename="clip.mp4")
            up.chunk(media["video"].read_bytes())
            up.finish()
            wait_until(lambda: c.get("/stats").json()["queue"]["depth"] == 1, timeout=5)
            assert len(uploads_left(settings)) == 2
            up.close()  # gives up while its request waits in the queue
            wait_until(lambda: c.get("/stats").json()["analyses"]["cancelled"] == 1, timeout=5)
            assert len(uploads_left(settings)) == 1  # only the running job's file
            gated.gate.set()
            wait_until(lambda: c.get(f"/jobs/{busy}").json()["status"] == "done", timeout=10)
    finally:
        gated.gate.set()
    assert not uploads_left(settings)


# -- load ------------------------------------------------------------------------------------------------
async def _ping_while(url: str, until: asyncio.Event, limit_s: float = 60.0) -> list[float]:
    """Ping every 50 ms until `until` is set (or `limit_s` passes); returns each ping's latency."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        deadline = time.monotonic() + limit_s
        while not until.is_set() and time.monotonic() < deadline:
            t0 = time.perf_counter()
            r = await c.get("/ping")
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200
            await asyncio.sleep(0.05)
    return latencies


async def _concurrent_uploads(url: str, path: Path, n: int, frames: int | None = None) -> list[httpx.Response]:
    data = path.read_bytes()
    limits = httpx.Limits(max_connections=n + 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        form = {"frames": str(frames)} if frames else {}
        return await asyncio.gather(*[c.post("/analyze", files={"media": (path.name, data)}, data=form)
                                      for _ in range(n)])


def _check_busy(r: httpx.Response) -> None:
    assert r.status_code in (429, 503), r.text
    assert r.json()["detail"]["error"] == "queue_full"
    assert int(r.headers["Retry-After"]) >= 1


def test_queue_of_3_under_12_concurrent_uploads_exact(detector, settings, media):
    """Deterministic: the worker is held busy, so exactly 1 running + 3 queued are admitted."""
    gated = GatedDetector(detector)
    settings.queue_size, settings.workers = 3, 1
    expected = detector.analyze(media["image"])

    async def scenario(url: str) -> tuple[list[httpx.Response], list[float]]:
        done = asyncio.Event()
        pings = asyncio.create_task(_ping_while(url, done))
        uploads = asyncio.create_task(_concurrent_uploads(url, media["image"], 12))
        async with httpx.AsyncClient(base_url=url) as c:
            deadline = time.monotonic() + 20
            while (await c.get("/stats")).json()["analyses"]["rejected"] < 8:
                assert time.monotonic() < deadline, "the 8 refusals did not come"
                await asyncio.sleep(0.05)
            queue = (await c.get("/stats")).json()["queue"]
            assert queue["depth"] == 3 and queue["running"] == 1
        await asyncio.sleep(0.3)  # /ping keeps answering while 4 requests wait
        gated.gate.set()
        responses = await uploads
        done.set()
        return responses, await pings

    try:
        with live_server(create_app(gated, settings)) as url:
            responses, pings = asyncio.run(scenario(url))
            stats = httpx.get(f"{url}/stats").json()
    finally:
        gated.gate.set()
    ok = [r for r in responses if r.status_code == 200]
    busy = [r for r in responses if r.status_code != 200]
    assert len(ok) == 4 and len(busy) == 8
    for r in ok:
        assert r.json()["data"]["score"] == pytest.approx(expected.score, abs=1e-9)
    for r in busy:
        _check_busy(r)
    assert stats["analyses"]["done"] == 4 and stats["analyses"]["rejected"] == 8
    assert pings and max(pings) < 1.0
    assert not uploads_left(settings)


def test_queue_of_3_under_12_concurrent_video_uploads_real(detector, settings, media):
    """Real inference, no gate: every upload gets a correct result or a 503 with Retry-After, none
    is lost, and /ping answers in under a second throughout."""
    settings.queue_size, settings.workers = 3, 1
    frames = 20
    expected = detector.analyze(media["video"], frames=frames)

    async def scenario(url: str):
        done = asyncio.Event()
        pings = asyncio.create_task(_ping_while(url, done))
        await asyncio.sleep(0.1)
        responses = await _concurrent_uploads(url, media["video"], 12, frames)
        done.set()
        return responses, await pings

    with live_server(create_app(detector, settings)) as url:
        responses, pings = asyncio.run(scenario(url))
        stats = httpx.get(f"{url}/stats").json()
    assert len(responses) == 12
    ok = [r for r in responses if r.status_code == 200]
    for r in responses:
        if r.status_code == 200:
            data = r.json()["data"]
            assert data["frames_analyzed"] == frames
            assert data["score"] == pytest.approx(expected.score, abs=1e-9)
        else:
            _check_busy(r)
    assert 1 <= len(ok) < 12  # 12 at once cannot all fit in 1 worker + 3 places
    assert stats["analyses"]["done"] == len(ok) and stats["analyses"]["rejected"] == 12 - len(ok)
    assert stats["analyses"]["failed"] == 0 and stats["queue"]["depth"] == 0
    assert len(pings) >= 2 and max(pings) < 1.0, pings
    assert not uploads_left(settings)


# -- the command ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mffmoe_serve_command(tmp_path, media):
    from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint

    weights = make_random_checkpoint(tmp_path / "weights", TINY_ROSTER, input_size=64)
    port = _free_port()
    env = {**os.environ, "MFFMOE_API_KEY": "cli-key"}
    cmd = [sys.executable, "-m", "mffmoe.cli", "serve", "--weights", str(weights), "--port", str(port),
           "--db", str(tmp_path / "jobs.sqlite3"), "--upload-dir", str(tmp_path / "uploads"),
           "--queue-size", "2", "--max-upload-mb", "5", "--device", "cpu", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # the port opens only once the model is loaded
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        assert httpx.get(f"{url}/stats").status_code == 401
        stats = httpx.get(f"{url}/stats", headers={"X-API-Key": "cli-key"}).json()
        assert stats["queue"]["queue_size"] == 2 and stats["model"]["ema"] is True
        r = httpx.post(f"{url}/analyze", headers={"X-API-Key": "cli-key"}, timeout=60,
                       files={"media": ("face.jpg", media["image"].read_bytes())})
        assert r.status_code == 200 and r.json()["data"]["media_type"] == "image"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert not list((tmp_path / "uploads").glob("*"))


def test_mffmoe_serve_bad_weights_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from mffmoe.cli import app
    r = CliRunner().invoke(app, ["serve", "--weights", str(tmp_path / "missing"), "--port", str(_free_port()),
                                 "--db", str(tmp_path / "db.sqlite3")])
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
