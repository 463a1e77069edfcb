"""Typed errors. Every expected failure is one of these, so callers (CLI, HTTP, scans) can report it
by kind without a traceback and never fall back to a made-up score."""
from __future__ import annotations


class MFFMoEError(Exception):
    """Base of every error mffmoe raises on purpose."""

    kind: str = "error"

    def to_dict(self) -> dict[str, str]:
        return {"type": type(self).__name__, "message": str(self)}


# --- weights -------------------------------------------------------------------------------------
class WeightsError(MFFMoEError):
    kind = "weights_error"


class WeightsNotFoundError(WeightsError):
    kind = "weights_not_found"


class CheckpointFormatError(WeightsError):
    """Keys, shapes or the EMA list do not match the roster. Never retried non-strictly."""

    kind = "checkpoint_mismatch"


class UnsafeCheckpointError(WeightsError):
    """The file needs arbitrary pickle code to load; it is refused and none of it runs."""

    kind = "unsafe_checkpoint"


class MissingEMAError(WeightsError):
    kind = "missing_ema"


# --- media ---------------------------------------------------------------------------------------
class MediaError(MFFMoEError):
    kind = "media_error"


class MediaNotFoundError(MediaError):
    kind = "not_found"


class EmptyMediaError(MediaError):
    kind = "empty_file"


class UnsupportedMediaError(MediaError):
    """Neither an image nor a video, judged by content."""

    kind = "unsupported_media"


class CorruptMediaError(MediaError):
    """Recognised as media but truncated or undecodable."""

    kind = "undecodable_media"


class DecompressionBombError(MediaError):
    kind = "decompression_bomb"


class VideoDecodeError(CorruptMediaError):
    """No sampled frame of a video could be decoded."""

    kind = "undecodable_media"
