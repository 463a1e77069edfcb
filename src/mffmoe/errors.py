"""Typed errors: the whole taxonomy, and `ErrorInfo`, the one way an error becomes data.

Every expected failure is one of these, user mistakes included (`ConfigError`), so the CLI, scans,
evaluation and the HTTP service report it by kind without a traceback and never fall back to a made-up
score. The service maps classes to HTTP statuses in `mffmoe.server.errors`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


class MFFMoEError(Exception):
    """Base of every error mffmoe raises on purpose."""

    kind: str = "error"

    def to_dict(self) -> dict[str, str]:
        return ErrorInfo.of(self).to_dict()


@dataclass(frozen=True)
class ErrorInfo:
    """An error as data: the class name, a stable short `kind` code and the message. Used by CLI output,
    scan rows, evaluation CSVs and the server (whose `{"detail": {"error", "message"}}` is a view of it)."""

    type: str
    kind: str
    message: str

    @classmethod
    def of(cls, error: BaseException) -> ErrorInfo:
        if isinstance(error, MFFMoEError):
            return cls(type(error).__name__, error.kind, str(error))
        return cls(type(error).__name__, "internal_error", f"{type(error).__name__}: {error}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# --- configuration and environment (user mistakes) ------------------------------------------------
class ConfigError(MFFMoEError, ValueError):
    """An option or setting that cannot work: unknown pooling/engine/format, a threshold out of range,
    autocast on the CPU. A `ValueError` too, so callers that caught that keep working."""

    kind = "invalid_config"


class MissingExtraError(MFFMoEError, ImportError):
    """A feature needs an optional dependency that is not installed (`pip install 'mffmoe[EXTRA]'`)."""

    kind = "missing_extra"


class CacheNotWritableError(MFFMoEError, PermissionError):
    kind = "cache_not_writable"


class NotLoadedError(MFFMoEError, RuntimeError):
    """A detector was used before `load()`."""

    kind = "not_loaded"


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


class UnreadableMediaError(MediaError):
    """The file exists but cannot be read (permissions, I/O error)."""

    kind = "unreadable"


class EmptyMediaError(MediaError):
    kind = "empty_file"


class UnsupportedMediaError(MediaError):
    """Neither an image nor a video, judged by content."""

    kind = "unsupported_media"


class MediaTypeDisabledError(UnsupportedMediaError):
    """A media type the configuration turned off (the host's `isImage` / `isVideo`)."""

    kind = "media_type_disabled"


class CorruptMediaError(MediaError):
    """Recognised as media but truncated or undecodable."""

    kind = "undecodable_media"


class DecompressionBombError(MediaError):
    kind = "decompression_bomb"


class VideoDecodeError(CorruptMediaError):
    """No sampled frame of a video could be decoded, or the decoder failed part-way. Same `kind` as its
    parent (clients treat both alike); the class tells Python callers it was a video."""


class DecoderCrashError(MediaError):
    """The process decoding this file died (a decoder crash on hostile or broken input)."""

    kind = "decoder_crash"


class UnexpectedDecodeError(MediaError):
    """Decoding raised something no typed error covers; recorded with its original type, not hidden."""

    kind = "internal_error"


# --- scans ---------------------------------------------------------------------------------------
class ScanError(MFFMoEError):
    kind = "scan_error"


class ScanSourceError(ScanError):
    """SOURCE is not a directory, a text file of paths or a CSV with a `path` column."""

    kind = "bad_source"


class ResultsMismatchError(ScanError):
    """RESULTS holds rows made with other weights or settings; mixing them would make a lie of the file."""

    kind = "results_mismatch"


class ResultsLockedError(ScanError):
    kind = "results_locked"


# --- training ------------------------------------------------------------------------------------
class DatasetError(MFFMoEError):
    """The data source itself is unusable (no real/ and fake/ folders, a malformed CSV, one class only)."""

    kind = "dataset_error"


class TrainingError(MFFMoEError):
    kind = "training_error"
