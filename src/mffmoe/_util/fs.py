"""Files: walking folders for inputs, hashing, and writing atomically. One copy of each, used by the
CLI, scans, training and the weights code."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def files_under(directory: Path) -> list[Path]:
    """Files below `directory`, sorted, hidden files and folders (a name starting with `.`) skipped."""
    return sorted(f for f in directory.rglob("*") if f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(directory).parts))


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, directories recursed (`files_under`), input order kept."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(files_under(p) if p.is_dir() else [p])
    return out


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Write `path` through a uniquely named temporary file beside it, renamed over `path` only once
    the block finishes: readers see the old file or the new one, never half of one, and concurrent
    writers never share a temporary name."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_replace_dir(staging: Path, final: Path) -> None:
    """Put the finished directory `staging` at `final`. An existing `final` is renamed aside first and
    removed only after the new one is in place, so there is never a moment without one."""
    import shutil

    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
