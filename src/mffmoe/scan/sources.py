"""Inputs of a scan: what SOURCE lists, and each file's content hash (the key of resumption and dedup)."""
from __future__ import annotations

import csv
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mffmoe._util.fs import expand_paths
from mffmoe.errors import (
    ErrorInfo,
    MediaNotFoundError,
    ScanSourceError,
    UnreadableMediaError,
)

T = TypeVar("T")
R = TypeVar("R")


def _normalize(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path.strip()))
    return os.path.abspath(p if p.is_absolute() else base / p)


def _walk(directory: Path) -> list[str]:
    """Files under `directory` in `mffmoe analyze`'s order (sorted, hidden files and folders skipped)."""
    return [os.path.abspath(p) for p in expand_paths([directory])]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ScanSourceError(f"{path}: not a text file of paths, a CSV with a `path` column or a "
                              f"directory") from None


def _read_csv(path: Path) -> Iterator[str]:
    reader = csv.DictReader(_read_text(path).splitlines())
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "path" not in columns:
        raise ScanSourceError(f"{path}: a CSV source needs a `path` column (found {reader.fieldnames})")
    name = (reader.fieldnames or [])[columns.index("path")]
    for row in reader:
        value = (row.get(name) or "").strip()
        if value:
            yield value


def _read_list(path: Path) -> Iterator[str]:
    for line in _read_text(path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def list_inputs(source: str | os.PathLike[str]) -> list[str]:
    """Absolute paths of SOURCE's inputs, each once, in source order. A directory is recursed; a
    `.csv` file is read by its `path` column, any other file as one path per line (`#` comments).
    Relative paths in a list resolve against the list's own folder, so the list can move with the data."""
    source = Path(source)
    if source.is_dir():
        items: Iterable[str] = _walk(source)
    elif source.is_file():
        base = source.parent.resolve()
        raw = _read_csv(source) if source.suffix.lower() == ".csv" else _read_list(source)
        items = (_normalize(p, base) for p in raw)
    else:
        raise ScanSourceError(f"{source}: no such file or directory")
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class HashedInput:
    """An input with its content identity, or the error that kept us from reading it."""

    path: str
    content_hash: str | None
    size: int | None
    error: ErrorInfo | None = None


def hash_file(path: str) -> HashedInput:
    """SHA-256 of the bytes. Unreadable files come back with a typed error instead of a hash."""
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
            size = f.tell()
        return HashedInput(path, digest.hexdigest(), size)
    except FileNotFoundError:
        return HashedInput(path, None, None, ErrorInfo.of(MediaNotFoundError(f"{path}: no such file")))
    except IsADirectoryError:
        return HashedInput(path, None, None, ErrorInfo.of(UnreadableMediaError(f"{path}: is a directory")))
    except OSError as e:
        return HashedInput(path, None, None,
                           ErrorInfo.of(UnreadableMediaError(f"{path}: cannot be read ({e.strerror or e})")))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int, window: int = 256) -> Iterator[R]:
    """`map` on a thread pool with at most `window` items in flight, results in input order.
    Hashing releases the GIL, so threads read and hash files in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="mffmoe-hash") as pool:
        futures: deque = deque()
        for item in items:
            futures.append(pool.submit(fn, item))
            if len(futures) >= window:
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()


def hash_inputs(paths: Iterable[str], threads: int = 8) -> Iterator[HashedInput]:
    return ordered_map(hash_file, paths, threads)
