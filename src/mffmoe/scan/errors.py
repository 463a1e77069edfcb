"""Errors of scans: setup problems stop the scan; per-file ones become rows, never a crash."""
from __future__ import annotations

from mffmoe.errors import MediaError, MFFMoEError


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


class UnreadableMediaError(MediaError):
    """The file exists but cannot be read (permissions, I/O error)."""

    kind = "unreadable"


class DecoderCrashError(MFFMoEError):
    """The process decoding this file died (a decoder crash on hostile or broken input)."""

    kind = "decoder_crash"


class UnexpectedDecodeError(MFFMoEError):
    """Decoding raised something no typed error covers; recorded with its original type, not hidden."""

    kind = "internal_error"
