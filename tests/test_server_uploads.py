"""Uploads and requests that cannot break the server, against a real uvicorn on 127.0.0.1.

A refused upload reaches a client that writes its whole body first; slow clients are cut and hold no
queue slot; no malformed request gives a 500; the whole body and its fields are bounded; a killed
server's upload files and job starts are cleaned up and kept right. Every loop is bounded in time.
"""
from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from mffmoe.server.app import create_app
from mffmoe.server.settings import ServerSettings
from mffmoe.server.uploads import UPLOAD_PREFIX, UPLOAD_SUFFIX
from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint
from server_helpers import INPUT_SIZE, GatedDetector, live_server, sample_media, tiny_detector, uploads_left, wait_until

BOUNDARY = "mffmoe-upload-test"


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return tiny_detector(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return sample_media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def settings(tmp_path) -> ServerSettings:
    return ServerSettings(db_path=tmp_path / "jobs.sqlite3", upload_dir=tmp_path / "uploads", api_key=None)



def part(name: str | bytes, value: bytes, filename: str | None = None, boundary: str = BOUNDARY) -> bytes:
    name_b = name if isinstance(name, bytes) else name.encode()
    disposition = b'form-data; name="' + name_b + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename.encode() + b'"'
    return (b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + value + b"\r\n")


def form(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    return b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"


def check_error_shape(status: int, body: bytes) -> dict:
    """The host's error shape: {"detail": {"error": kind, "message": text}}."""
    detail = json.loads(body)["detail"]
    assert isinstance(detail["error"], str) and detail["error"], detail
    assert isinstance(detail["message"], str) and detail["message"], detail
    return detail


def host_port(url: str) -> tuple[str, int]:
    host, port = url.rsplit("//", 1)[1].split(":")
    return host, int(port)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP response with a Content-Length body: (head, body); whatever came when the peer closed."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(body) >= length:
                return head, body
        try:
            more = sock.recv(65536)
        except OSError:
            more = b""
        if not more:
            return head, body
        data += more


# -- 1. a refused upload reaches a client that writes everything before reading ---------------------------
def test_413_reaches_a_client_that_sends_the_whole_body_first(detector, settings):
    settings.max_upload_mb = 1
    settings.upload_drain_mb = 24
    body = form(part("model", b"MFF-MOE-V1"), part("media", os.urandom(16 * 2**20), "big.mp4"))
    with live_server(create_app(detector, settings)) as url:
        request = urllib.request.Request(f"{url}/analyze", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=20)
        assert caught.value.code == 413
        assert check_error_shape(413, caught.value.read())["error"] == "payload_too_large"
        # The same for a chunked body (http.client sends it all before reading the answer).
        import http.client
        conn = http.client.HTTPConnection(*host_port(url), timeout=20)
        conn.request("POST", "/jobs", body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                     headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, encode_chunked=True)
        answer = conn.getresponse()
        assert answer.status == 413
        check_error_shape(413, answer.read())
        conn.close()
        assert httpx.get(f"{url}/ping").status_code == 200
    assert not uploads_left(settings)


# -- 2. slow clients ----------------------------------------------------------------------------------------
class Trickler(threading.Thread):
    """A client that announces a body and sends it at 1 byte per 0.5 s; records how it was answered."""

    def __init__(self, url: str, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(host_port(url), timeout=10)
        self.sock.sendall(b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n"
                          b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode() + b"\r\n\r\n")
        self.limit_s = limit_s
        self.body = part("media", b"x" * 20000, "a.jpg")  # a valid start, so only the rate is wrong
        self.answer: bytes | None = None
        self.after_s: float | None = None

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            for i in range(len(self.body)):
                if select.select([self.sock], [], [], 0.5)[0] or time.monotonic() - t0 > self.limit_s:
                    self.answer = b"\r\n\r\n".join(read_response(self.sock))
                    break
                self.sock.sendall(self.body[i:i + 1])
        except OSError:
            self.answer = b""  # cut
        self.after_s = time.monotonic() - t0
        self.sock.close()


def test_slow_clients_hold_no_slot_and_are_cut(detector, settings, media):
    settings.queue_size, settings.workers = 3, 1  # 4 slots: today 4 tricklers take them all
    settings.upload_grace_s, settings.upload_min_kbps = 2.0, 1.0
    settings.upload_idle_timeout_s, settings.upload_timeout_s = 3.0, 6.0
    with live_server(create_app(detector, settings)) as url:
        tricklers = [Trickler(url, limit_s=12) for _ in range(4)]
        for t in tricklers:
            t.start()
        wait_until(lambda: httpx.get(f"{url}/stats").status_code == 200, timeout=5)
        time.sleep(0.5)  # all four are connected and trickling
        assert all(t.answer is None for t in tricklers)
        r = httpx.post(f"{url}/analyze", files={"media": ("face.jpg", media["image"].read_bytes())}, timeout=20)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["media_type"] == "image"
        for t in tricklers:
            t.join(timeout=15)
        for t in tricklers:
            assert t.after_s is not None and t.after_s < 5.0, t.after_s  # grace 2 s, then the rate check
            if t.answer:  # 408 in the host's shape (or the connection was cut)
                head, _, rest = t.answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408"), head
                if rest:
                    assert check_error_shape(408, rest)["error"] == "upload_timeout"
        assert httpx.get(f"{url}/ping").status_code == 200
    assert not uploads_left(settings)


def test_idle_client_gets_408(detector, settings):
    settings.upload_idle_timeout_s, settings.upload_min_kbps = 1.0, 0
    with live_server(create_app(detector, settings)) as url, \
            socket.create_connection(host_port(url), timeout=10) as sock:
        head = (b"POST /jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode() + b"\r\n\r\n")
        start = part("media", b"", "a.jpg")[:-2]
        sock.sendall(head + b"%x\r\n" % len(start) + start + b"\r\n")
        t0 = time.monotonic()
        head, rest = read_response(sock)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert time.monotonic() - t0 < 5
        assert b"connection: close" in head.lower()
        check_error_shape(408, rest)
    assert not uploads_left(settings)


def test_a_full_queue_still_refuses_before_the_upload(detector, settings, media):
    gated = GatedDetector(detector)
    settings.queue_size = 0
    try:
        with live_server(create_app(gated, settings)) as url, httpx.Client(base_url=url, timeout=20) as c:
            busy = c.post("/jobs", files={"media": ("a.jpg", media["image"].read_bytes())}).json()["job_id"]
            gated.wait_entered()
            with socket.create_connection(host_port(url), timeout=10) as sock:  # headers only, no body yet
                sock.sendall(b"POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n"
                             b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
                head, rest = read_response(sock)
            assert head.startswith(b"HTTP/1.1 503") and b"retry-after:" in head.lower(), head
            assert check_error_shape(503, rest)["error"] == "queue_full"
            gated.gate.set()
            wait_until(lambda: c.get(f"/jobs/{busy}").json()["status"] == "done", timeout=10)
    finally:
        gated.gate.set()


# -- 3. no malformed request gives a 500 ----------------------------------------------------------------------
def _bad_requests() -> list[tuple[str, dict[str, bytes], bytes]]:
    mp = "multipart/form-data; boundary="
    ok_file = part("media", b"\xff\xd8\xff" * 10, "a.jpg")
    long_b = "b" * 300
    cases = [
        (mp + long_b, form(part("media", b"x", "a.jpg", long_b), boundary=long_b)),
        ("multipart/form-data", form(ok_file)),                      # no boundary
        (mp, form(ok_file)),                                         # empty boundary
        ('multipart/form-data; boundary="', form(ok_file)),
        ("text/plain", b"hello"),
        ("", b"hello"),
        ("multipart/form-data; boundary=" + BOUNDARY + "; charset=\xff", form(ok_file)),
        (mp + BOUNDARY, b""),
        (mp + BOUNDARY, os.urandom(2048)),
        (mp + BOUNDARY, form(ok_file)[:40]),                         # truncated in the headers
        (mp + BOUNDARY, form(ok_file)[:-10]),                        # truncated before the end
        (mp + BOUNDARY, form(ok_file, ok_file)),                     # two media files
        (mp + BOUNDARY, form(part(b"\xff\xfe\x80", b"v"), ok_file)),  # non-UTF-8 field name
        (mp + BOUNDARY, form(part("model", b"\xff\xfe"), ok_file)),   # non-UTF-8 value
        (mp + BOUNDARY, form(part("model", b"a"), part("model", b"b"), ok_file)),
        (mp + BOUNDARY, form(part("frames", b"1e999"), ok_file)),
        (mp + BOUNDARY, form(part("frames", b"-1"), ok_file)),
        (mp + BOUNDARY, b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data\r\n\r\nx\r\n"),
        (mp + BOUNDARY, b"--" + BOUNDARY.encode() + b"\r\nX: " + b"h" * 10000 + b"\r\n\r\nx\r\n"),
        (mp + BOUNDARY, b"--" + BOUNDARY.encode() + b"\r\n" + b"A: b\r\n" * 50 + b"\r\nx\r\n"),
        (mp + BOUNDARY, b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=\"media\"; "
                        b"filename=\"a\"\r\n\r\n"),
        (mp + BOUNDARY, form(part("media", b"", "empty.jpg"))),
        (mp + BOUNDARY, form(part("media", b"not an image at all", "a.jpg"))),
    ]
    rng = random.Random(11)
    good = form(part("model", b"MFF-MOE-V1"), ok_file)
    for _ in range(25):  # random byte flips, cuts and insertions of a valid form
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(data))
            action = rng.random()
            if action < 0.5:
                data[i] = rng.randrange(256)
            elif action < 0.8:
                del data[i:i + rng.randint(1, 20)]
            else:
                data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        cases.append((mp + BOUNDARY, bytes(data)))
    return [(ctype, {"Content-Type": ctype.encode("latin-1")} if ctype else {}, body) for ctype, body in cases]


def test_no_malformed_request_gives_a_500(detector, settings):
    with TestClient(create_app(detector, settings), raise_server_exceptions=False) as c:
        for endpoint in ("/analyze", "/jobs"):
            for ctype, headers, body in _bad_requests():
                r = c.post(endpoint, content=body, headers=headers)
                assert r.status_code < 500, (ctype, body[:200], r.text)
                if r.status_code >= 400:
                    check_error_shape(r.status_code, r.content)
    assert not uploads_left(settings)


def test_long_boundary_is_400_over_http(detector, settings):
    long_b = "b" * 300
    with live_server(create_app(detector, settings)) as url:
        r = httpx.post(f"{url}/analyze", content=form(part("media", b"x", "a.jpg", long_b), boundary=long_b),
                       headers={"Content-Type": f"multipart/form-data; boundary={long_b}"})
    assert r.status_code == 400, r.text
    assert check_error_shape(400, r.content)["error"] == "invalid_request"


# -- 5. the whole body and its fields are bounded --------------------------------------------------------------
def _chunked_post(url: str, chunks, path: str = "/analyze") -> tuple[int, bytes, int]:
    """POST `chunks` as a chunked body until the server answers; (status, body, bytes sent)."""
    sent = 0
    with socket.create_connection(host_port(url), timeout=10) as sock:
        sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode() + b"\r\n\r\n")
        try:
            for data in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
                sent += len(data)
            else:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < 20:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    head, _, body = answer.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return int(head.split(b" ", 2)[1]), body, sent


def test_repeated_text_fields_are_bounded(detector, settings, media):
    settings.max_upload_mb = 0.05
    settings.max_form_fields, settings.max_field_kb = 4, 1
    settings.upload_drain_mb = 0.5  # a refused body is read on up to this before the answer
    image = media["image"].read_bytes()
    with live_server(create_app(detector, settings)) as url:
        # Many repeats of one field (today they overwrite each other and are never counted).
        repeated = (part("note", b"x" * 1000) for _ in range(10_000))  # 10 MB if all were sent
        status, body, sent = _chunked_post(url, repeated)
        assert status == 400 and sent < 4 * 2**20
        assert "more than once" in check_error_shape(status, body)["message"]
        # Too many distinct fields.
        many = (part(f"f{i}", b"v") for i in range(100))
        status, body, _ = _chunked_post(url, many)
        assert status == 400 and "more than 4" in check_error_shape(status, body)["message"]
        # One field too long.
        status, body, _ = _chunked_post(url, [part("mediaId", b"x" * 2000), part("media", image, "a.jpg")])
        assert status == 400 and "longer than" in check_error_shape(status, body)["message"]
        # Within the limits: accepted.
        status, body, _ = _chunked_post(url, [part("model", b"MFF-MOE-V1"), part("media", image, "a.jpg"),
                                              b"--" + BOUNDARY.encode() + b"--\r\n"])
        assert status == 200, body
        # A valid form followed by megabytes of epilogue: the whole body is bounded, not only the file.
        tail = (b"e" * 65536 for _ in range(160))  # 10 MB
        status, body, sent = _chunked_post(url, [form(part("media", image, "a.jpg")), *tail])
        assert status == 413 and sent < 8 * 2**20
        assert check_error_shape(status, body)["error"] == "payload_too_large"
    assert not uploads_left(settings)


# -- 4. a killed server: stale uploads removed, `started` kept ------------------------------------------------
SERVER_SCRIPT = """
import sys, uvicorn
sys.path.insert(0, sys.argv[1])
from mffmoe.inference.detector import Detector
from mffmoe.server.app import create_app
from mffmoe.server.settings import ServerSettings
from server_helpers import GatedDetector
detector = GatedDetector(Detector.from_dir(sys.argv[2], device="cpu", batch_size=8))  # never opened
settings = ServerSettings(db_path=sys.argv[3], upload_dir=sys.argv[4], api_key=None, queue_size=2)
uvicorn.run(create_app(detector, settings), host="127.0.0.1", port=int(sys.argv[5]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killed_server_leaves_no_stale_uploads_and_keeps_started(detector, settings, media, tmp_path):
    weights = make_random_checkpoint(tmp_path / "weights", TINY_ROSTER, input_size=INPUT_SIZE)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(Path(__file__).parent), str(weights), str(settings.db_path), str(settings.upload_dir), str(port)]
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=20) as c:
            running = c.post("/jobs", files={"media": ("a.jpg", media["image"].read_bytes())}).json()["job_id"]
            queued = c.post("/jobs", files={"media": ("b.png", media["png"].read_bytes())}).json()["job_id"]
            wait_until(lambda: c.get(f"/jobs/{running}").json()["status"] == "running", timeout=10)
            started = c.get(f"/jobs/{running}").json()["started"]
            assert started is not None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)  # reaped: its pid is gone
    stale = uploads_left(settings)
    assert len(stale) == 2 and all(p.name.startswith(UPLOAD_PREFIX) for p in stale)
    foreign = [settings.upload_dir / "other-program.tmp", settings.upload_dir / f"{UPLOAD_PREFIX}notes.txt",
               settings.upload_dir / f"{UPLOAD_PREFIX}{os.getpid()}-live{UPLOAD_SUFFIX}"]  # a live server's
    for p in foreign:
        p.write_bytes(b"keep")
    with TestClient(create_app(detector, settings)) as c:
        assert sorted(uploads_left(settings)) == sorted(foreign)
        state = c.get(f"/jobs/{running}").json()
        assert state["status"] == "failed" and state["error"]["error"] == "interrupted", state
        assert state["started"] == pytest.approx(started)
        waiting = c.get(f"/jobs/{queued}").json()
        assert waiting["status"] == "failed" and waiting["started"] is None
