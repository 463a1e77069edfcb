"""Shared helpers for the server tests: a tiny real detector, sample media, a live uvicorn server."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mffmoe.inference.detector import Detector
from mffmoe.server.settings import ServerSettings
from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint
from mffmoe.testing.media import make_image, make_video

INPUT_SIZE = 64


def tiny_detector(directory: Path) -> Detector:
    """A real detector on a random checkpoint in the official layout (tiny roster, 64 px). Its default
    crop is frame, as the server's; a request's `crop` field builds the face finder on first use."""
    make_random_checkpoint(directory, TINY_ROSTER, input_size=INPUT_SIZE)
    return Detector.from_dir(directory, device="cpu", batch_size=8, crop="frame")


def sample_media(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "image": make_image(directory / "face.jpg", 160, 120, quality=90),
        "png": make_image(directory / "face.png", 96, 80, seed=3),
        "video": make_video(directory / "clip.mp4", seconds=2.0, fps=10, width=96, height=64),
    }


def face_media(directory: Path) -> dict[str, Path]:
    """Media with real faces (mffmoe.testing.faces): an image with two faces, an image without one, and
    a video of two faces crossing a generated background (two persons)."""
    import numpy as np

    from mffmoe.testing.faces import background, face_free_scene, face_scene, face_sources
    from mffmoe.testing.media import encode_video

    directory.mkdir(parents=True, exist_ok=True)
    image, free = directory / "two-faces.png", directory / "no-face.png"
    face_scene(11, 640, 480, n_faces=2, sizes=(90, 160)).image.save(image)
    face_free_scene(3, 320, 240).save(free)
    astronaut, hopper = face_sources()[:2]
    bg = background(640, 360, np.random.default_rng(0))
    heads = [s.image.crop(s.head).resize((110, 120)) for s in (astronaut, hopper)]
    frames = []
    for t in range(FACE_VIDEO_FRAMES):
        frame = bg.copy()
        frame.paste(heads[0], (40 + 40 * t, 40))    # left to right, higher
        frame.paste(heads[1], (490 - 40 * t, 130))  # right to left, lower
        frames.append(np.asarray(frame))
    video = encode_video(directory / "two-persons.mp4", frames, fps=6)
    return {"faces": image, "no_face": free, "video": video}


#: Frames of `face_media`'s video (all of them are sampled with frames=FACE_VIDEO_FRAMES).
FACE_VIDEO_FRAMES = 12


@contextmanager
def live_server(app, *, log_level: str = "warning") -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class GatedDetector:
    """A real Detector whose `analyze` waits for `gate` first, so tests can hold a worker busy and
    fill the queue deterministically. Everything else is the wrapped detector's."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def analyze(self, path, **kwargs):
        self.entered.release()
        if not self.gate.wait(60):
            raise RuntimeError("test gate never opened")
        return self.inner.analyze(path, **kwargs)

    def wait_entered(self, timeout: float = 10.0) -> None:
        if not self.entered.acquire(timeout=timeout):
            raise AssertionError("no job reached the detector")


def assert_error(response, status: int, kind: str) -> dict:
    """The host client's error shape: {"detail": {"error": kind, "message": text}}."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["error"] == kind, detail
    assert isinstance(detail["message"], str) and detail["message"]
    return detail


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)


def checked_health(client, timeout: float = 60.0) -> dict:
    """`/health` once the weights' structural checks (run in the background after start-up) are done;
    meanwhile the server is ready and says its checks are running."""
    def done() -> bool:
        body = client.get("/health").json()
        if body["weights"].get("checking"):
            assert body["status"] == "ok" and body["ready"] is True and body["weights"]["ok"] is None
            return False
        return True
    wait_until(done, timeout, 0.1)
    return client.get("/health").json()


def uploads_left(settings: ServerSettings) -> list[Path]:
    """The files left in the server's upload folder, sorted (none once every request has ended)."""
    return sorted(settings.upload_dir.glob("*")) if settings.upload_dir.exists() else []


class HeldAfterFirstBatch:
    """A real Detector that, after a video's first progress report, waits for `gate`: a test can hold a
    job mid-video. Everything else is the wrapped detector's."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.reported = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def analyze(self, path, progress=None, **kwargs):
        def held(done: int, total: int) -> None:
            if progress is not None:
                progress(done, total)
            if not self.reported.is_set():
                self.reported.set()
                self.gate.wait(60)

        return self.inner.analyze(path, progress=held, **kwargs)
