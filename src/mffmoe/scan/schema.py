"""One row per input: the columns of RESULTS and how a result or an error becomes a row.

Rows are flat (Parquet- and SQL-friendly): the fields of `mffmoe analyze`'s result that matter for a
collection (in faces/auto mode also what was scored, whether the input was in scope, its faces' count and
highest score, a video's persons; in every mode the scope reasons, the assessment and the experts' spread,
see docs/trust.md), the error for failures, and the identity of the model and settings
that made the row (the crop mode included), so a resumed scan can tell whether a row still counts.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from mffmoe._util.fs import sha256_file
from mffmoe.config import DetectorConfig
from mffmoe.errors import ErrorInfo
from mffmoe.model.info import CheckpointInfo
from mffmoe.results import AnalysisResult, VideoAnalysisResult


@dataclass(frozen=True)
class ScanSettings:
    """What made the rows. The identity fields must match for a stored row to count as done."""

    model: str
    weights_hash: str
    engine: str
    frames: int
    pooling: str
    threshold: float
    crop: str = "frame"                 # the crop mode, resolved (frame | faces | auto)
    face_settings: str | None = None    # faces/auto: the face finder's and face pooling's settings

    def identity(self) -> dict[str, Any]:
        return {"weights_hash": self.weights_hash, "frames_requested": self.frames,
                "pooling": self.pooling, "threshold": self.threshold, "crop_requested": self.crop,
                "face_settings": self.face_settings}

    @classmethod
    def face_settings_of(cls, config: DetectorConfig, crop: str) -> str | None:
        """What else decides a row in faces/auto mode, as one comparable string (None in frame mode)."""
        if crop == "frame":
            return None
        return json.dumps({"detector": config.face_detector, "margin": config.face_margin, "align": config.align,
                           "min_face": config.min_face, "max_faces": config.max_faces,
                           "face_pooling": config.face_pooling}, sort_keys=True)


#: Columns whose values must equal the current settings for a stored row to be reused.
IDENTITY_COLUMNS = ("weights_hash", "frames_requested", "pooling", "threshold", "crop_requested", "face_settings")
#: What a stored row's null means in an identity column (rows of scans from before crop modes: whole frames).
IDENTITY_DEFAULTS: dict[str, Any] = {"crop_requested": "frame"}

SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("content_hash", pa.string()),          # sha256 of the bytes
    pa.field("size", pa.int64()),                   # bytes
    pa.field("media_type", pa.string()),            # image | video
    pa.field("prediction", pa.string()),            # REAL | FAKE
    pa.field("score", pa.float64()),                # ensemble P(fake)
    pa.field("confidence", pa.float64()),
    pa.field("expert_scores", pa.list_(pa.float64())),
    pa.field("frames_analyzed", pa.int32()),        # videos
    pa.field("frames_failed", pa.int32()),
    pa.field("frame_count", pa.int64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("duration", pa.float64()),
    pa.field("note", pa.string()),
    pa.field("crop", pa.string()),                  # what was scored: frame | faces
    pa.field("in_scope", pa.bool_()),               # false when a scope reason applies; faces/auto: else true
    pa.field("scope_reasons", pa.list_(pa.string())),  # no_face, tiny_input, upscaled, ... (docs/trust.md)
    pa.field("assessment", pa.string()),            # likely_real | uncertain | likely_fake (the agreement's)
    pa.field("expert_std", pa.float64()),           # the experts' spread (the agreement's std)
    pa.field("face_count", pa.int32()),             # faces/auto: faces scored (videos: over all sampled frames)
    pa.field("max_face_score", pa.float64()),       # faces/auto: the highest face's P(fake)
    pa.field("persons", pa.int32()),                # faces/auto, videos: persons seen
    pa.field("error_type", pa.string()),            # typed error class, e.g. CorruptMediaError
    pa.field("error_kind", pa.string()),            # its short kind, e.g. undecodable_media
    pa.field("error_message", pa.string()),
    pa.field("duplicate_of", pa.string()),          # the path whose analysis this row reuses
    pa.field("processing_time", pa.float64()),      # seconds of decode + inference spent on this file
    pa.field("model", pa.string()),
    pa.field("weights_hash", pa.string()),
    pa.field("engine", pa.string()),
    pa.field("frames_requested", pa.int32()),
    pa.field("pooling", pa.string()),
    pa.field("threshold", pa.float64()),
    pa.field("crop_requested", pa.string()),        # the crop mode of the scan: frame | faces | auto
    pa.field("face_settings", pa.string()),         # faces/auto: face finder and face pooling settings (JSON)
    pa.field("scanned_at", pa.timestamp("us", tz="UTC")),
])
COLUMNS = tuple(SCHEMA.names)
#: Columns that describe the run rather than the input: they differ between two scans of the same file.
RUN_COLUMNS = ("processing_time", "scanned_at", "engine")


def now() -> datetime:
    return datetime.now(UTC)


def make_row(path: str, content_hash: str | None, size: int | None, outcome: AnalysisResult | ErrorInfo,
             seconds: float, settings: ScanSettings, duplicate_of: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(path=path, content_hash=content_hash, size=size, duplicate_of=duplicate_of,
               processing_time=float(seconds), model=settings.model, weights_hash=settings.weights_hash,
               engine=settings.engine, frames_requested=settings.frames, pooling=settings.pooling,
               threshold=settings.threshold, crop_requested=settings.crop, face_settings=settings.face_settings,
               scanned_at=now())
    if isinstance(outcome, ErrorInfo):
        row.update(error_type=outcome.type, error_kind=outcome.kind, error_message=outcome.message)
        return row
    row.update(media_type=outcome.media_type, prediction=outcome.prediction, score=outcome.score,
               confidence=outcome.confidence, expert_scores=[float(s) for s in outcome.expert_scores],
               width=outcome.dimensions.get("width"), height=outcome.dimensions.get("height"),
               note=outcome.note, model=outcome.model, crop=outcome.crop, in_scope=outcome.in_scope,
               scope_reasons=list(outcome.scope_reasons))
    if outcome.agreement is not None:
        row.update(assessment=outcome.agreement.assessment, expert_std=outcome.agreement.std)
    if isinstance(outcome, VideoAnalysisResult):
        row.update(frames_analyzed=outcome.frames_analyzed, frames_failed=outcome.frames_failed,
                   frame_count=outcome.frame_count, duration=outcome.duration)
    if settings.crop != "frame":
        faces = face_scores(outcome)
        row.update(face_count=len(faces), max_face_score=max(faces) if faces else None)
        if isinstance(outcome, VideoAnalysisResult):
            row["persons"] = len(outcome.persons or [])
    return row


def face_scores(result: AnalysisResult) -> list[float]:
    """The scores of every face a result scored: an image's faces, a video's faces over its frames."""
    if isinstance(result, VideoAnalysisResult):
        return [f.score for p in result.frame_predictions for f in p.faces or []]
    return [f.score for f in result.faces or []]


def copy_row(row: dict[str, Any], path: str, source_path: str) -> dict[str, Any]:
    """A duplicate's row: the analysis of `source_path`, filed under `path`."""
    out = dict(row)
    out.update(path=path, duplicate_of=source_path, processing_time=0.0, scanned_at=now())
    return out


def weights_hash(info: CheckpointInfo) -> str:
    """Content identity of the weights (SHA-256 of the files, roster, input size, EMA use). Unlike
    `CheckpointInfo.fingerprint` it survives copying the files to another machine, which resuming a
    scan on a cluster needs. Costs one read of the files."""
    h = hashlib.sha256()
    for role, path in sorted(info.files.items()):
        h.update(f"{role}:{sha256_file(path)};".encode())
    h.update(json.dumps([list(info.roster), info.input_size, info.ema]).encode())
    prefix = "" if info.files else "untrained-"
    return prefix + h.hexdigest()[:16]
