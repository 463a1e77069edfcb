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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A uniquely named temporary path beside `path`, renamed over it once the block finishes (for
    writers that want a file name, e.g. safetensors' streaming `save_file`). Readers see the old file
    or the new one, never half of one; concurrent writers never share a temporary name; the file gets
    the permissions a plain `open()` would give it."""
    target = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; weights and caches are shared files
        os.close(fd)
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """`atomic_path`, opened: write the file object, and `path` is replaced when the block ends."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


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
