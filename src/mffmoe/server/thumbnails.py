"""Small JPEG thumbnails of a stored video job's sampled frames, so the web page can show the frame
behind a point of its per-frame chart.

They are taken after the analysis from the upload (before it is removed), by sampling the video again
with the same frame count, so they are exactly the frames that were scored. One folder per job, next
to the job database (`<db>.frames/<job id>/<frame index>.jpg`); a job's folder goes when the job is
purged (`prune` at start-up). A thumbnail that cannot be made is logged and missing, never a failed job.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from PIL import Image

from mffmoe.media.source import open_video
from mffmoe.results import VideoAnalysisResult

log = logging.getLogger("mffmoe.server")

#: At most this many thumbnails per job (evenly spread over the sampled frames).
MAX_PER_JOB = 200
#: Longest side in pixels.
SIZE = 320
QUALITY = 80


def folder(db_path: Path) -> Path | None:
    """Where thumbnails live for the job database at `db_path`; None for an in-memory database."""
    if str(db_path) == ":memory:":
        return None
    return db_path.with_name(db_path.name + ".frames")


def spread(indices: Sequence[int], limit: int) -> list[int]:
    """At most `limit` of `indices`, evenly spaced, first and last included."""
    if len(indices) <= limit:
        return list(indices)
    if limit == 1:
        return [indices[0]]
    return sorted({indices[round(i * (len(indices) - 1) / (limit - 1))] for i in range(limit)})


def keep(root: Path | None, job_id: str, video: Path, frames: int, result: VideoAnalysisResult,
         also: Iterable[int] = ()) -> int:
    """Write the thumbnails of `result`'s frames (sampled as `frames` per video; at most MAX_PER_JOB of
    them, plus every frame index in `also`: the explained frames, whose maps the page draws on them);
    returns how many."""
    if root is None:
        return 0
    wanted = set(spread([f.frame_index for f in result.frame_predictions], MAX_PER_JOB)) | set(also)
    staging = root / f".{job_id}.partial"
    try:
        staging.mkdir(parents=True, exist_ok=True)
        written = 0
        with open_video(video, frames) as item:
            for sample in item.samples():
                if sample.image is None or sample.frame_index not in wanted:
                    continue
                image = Image.fromarray(sample.image)
                image.thumbnail((SIZE, SIZE))
                image.save(staging / f"{sample.frame_index}.jpg", quality=QUALITY)
                written += 1
        os.replace(staging, root / job_id)  # all or nothing for readers
        return written
    except Exception:
        log.warning("job %s: no frame thumbnails", job_id, exc_info=True)
        shutil.rmtree(staging, ignore_errors=True)
        return 0


def path(root: Path | None, job_id: str, frame_index: int) -> Path | None:
    """The thumbnail's file, or None when there is none."""
    if root is None or not job_id.isalnum():
        return None
    file = root / job_id / f"{frame_index}.jpg"
    return file if file.is_file() else None


def remove(root: Path | None, job_id: str) -> None:
    if root is not None and job_id.isalnum():
        shutil.rmtree(root / job_id, ignore_errors=True)


def prune(root: Path | None, exists: Callable[[str], bool]) -> int:
    """Remove the folders of jobs that are no longer stored, and partial ones; returns how many."""
    if root is None or not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        if entry.name.startswith(".") or not exists(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed
