"""Where exported artefacts and calibration records live: next to the weights, keyed by their fingerprint.

`<weights dir>/.mffmoe-cache/<fingerprint>/<format>/` (for a `.safetensors` file: its directory). When
that directory is not writable, `$MFFMOE_CACHE_DIR` or the platform's user cache folder (platformdirs:
`$XDG_CACHE_HOME/mffmoe`, else `~/.cache/mffmoe` on Linux) is used instead, under the same
`<fingerprint>/<format>/` names; lookups try both, weights side first.
The fingerprint (`CheckpointInfo.fingerprint()`: file names, sizes, mtimes, roster, input size) changes
whenever the weights do, so a stale artefact is never picked up; old ones are simply left behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mffmoe._util.fs import atomic_replace_dir, atomic_write
from mffmoe.config import env
from mffmoe.errors import CacheNotWritableError
from mffmoe.model.info import CheckpointInfo

FORMATS = ("onnx", "openvino")
#: Bump when the exported graphs change meaning, so older cache entries are not reused.
EXPORT_VERSION = {"onnx": "onnx-3", "openvino": "openvino-4"}
CACHE_DIRNAME = ".mffmoe-cache"
CACHE_ENV = "MFFMOE_CACHE_DIR"
MANIFEST = "artifacts.json"


def user_cache_root() -> Path:
    """Where exports go when the weights' own folder is not writable (`Settings.cache_root`)."""
    return env().cache_root


def weights_dir(info: CheckpointInfo) -> Path | None:
    """The directory holding the weight files (None for untrained models, which have no files)."""
    if not info.files:
        return None
    src = Path(info.source)
    return src if src.is_dir() else src.parent


def candidate_roots(info: CheckpointInfo) -> list[Path]:
    """Cache roots for these weights, in lookup order."""
    roots = []
    wd = weights_dir(info)
    if wd is not None:
        roots.append(wd / CACHE_DIRNAME / info.fingerprint())
    roots.append(user_cache_root() / (info.fingerprint() if info.files else "untrained"))
    return roots


def _writable(directory: Path) -> bool:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


def writable_root(info: CheckpointInfo) -> Path:
    """The first cache root we may write to (weights side if possible)."""
    for root in candidate_roots(info):
        if _writable(root):
            return root
    raise CacheNotWritableError(f"no writable cache directory: tried {[str(r) for r in candidate_roots(info)]}; "
                                f"set {CACHE_ENV} to a writable directory")


def find_artifacts(info: CheckpointInfo, fmt: str, version: str | None = None) -> tuple[Path, dict[str, Any]] | None:
    """An existing, complete artefact directory for `fmt` made by exporter `version` (default: the current
    one, `EXPORT_VERSION`), if any."""
    version = version or EXPORT_VERSION[fmt]
    if not info.files:
        return None
    for root in candidate_roots(info):
        d = root / fmt
        manifest = read_json(d / MANIFEST)
        if (manifest and manifest.get("version") == version and manifest.get("fingerprint") == info.fingerprint()
                and all((d / f).exists() for f in manifest.get("files", []))):
            return d, manifest
    return None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _not_writable(path: Path, error: PermissionError) -> CacheNotWritableError:
    return CacheNotWritableError(f"cannot write the cache at {path} ({error}); set {CACHE_ENV} to a writable "
                                 f"directory")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (readers never see half a record, concurrent writers never share a temporary file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(json.dumps(data, indent=2) + "\n")
    except PermissionError as e:
        raise _not_writable(path, e) from e


class StagingDir:
    """Build an artefact directory beside its final place and move it in only when complete, so a
    crash or a concurrent export never leaves a half-written cache entry behind."""

    def __init__(self, final: Path) -> None:
        self.final = final
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        except PermissionError as e:
            raise _not_writable(final.parent, e) from e
        os.chmod(self.path, 0o777 & ~_umask())  # mkdtemp makes it private; the cache is as shared as the weights

    def commit(self) -> Path:
        """Move the finished directory in (an older entry is replaced without a moment of neither)."""
        try:
            atomic_replace_dir(self.path, self.final)
        except OSError:  # another process committed first: keep theirs
            shutil.rmtree(self.path, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def say(message: str) -> None:
    print(f"mffmoe: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created), process-wide: builds of one cache entry run one at a time;
    a process that has to wait says so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another process is preparing the graphs for these weights; waiting for it (lock {path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
