"""Checks that need no model, run before one loads: a mistake in an option, an input or an output path
costs the user a line at once, not the model's load time and memory first.

Each raises a typed `MFFMoEError` (the commands print it as their one error line).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mffmoe.errors import ConfigError, MFFMoEError

if TYPE_CHECKING:
    from mffmoe.media.probe import MediaKind


def check_engine(name: str) -> None:
    """An engine the registry knows (naming one imports none of them)."""
    from mffmoe.engine import ALIASES, ENGINES

    if ALIASES.get(name, name) not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}; choose from {', '.join(sorted(ENGINES))}")


def check_device(device: str) -> None:
    """`cuda` / `cuda:N` only where torch sees that GPU (`auto` and `cpu` always work). Imports torch,
    but only when a GPU is asked for."""
    if not device.startswith("cuda"):
        return
    from mffmoe.engine.device import resolve_device

    dev = resolve_device(device)  # ConfigError without CUDA
    import torch

    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_precision_here(precision: str, engine: str) -> None:
    """`--precision` other than fp32 only where the CPU and the engine run it (reads /proc/cpuinfo)."""
    if precision != "fp32":
        from mffmoe.engine import ALIASES
        from mffmoe.engine.precision import check_precision

        check_precision(precision, ALIASES.get(engine, engine))


def check_options(engine: str, device: str, precision: str = "fp32") -> None:
    check_engine(engine)
    check_device(device)
    check_precision_here(precision, engine)


def check_output_path(path: Path, what: str = "--output") -> None:
    """A file that can be written: not a directory, in a folder that exists and that we may write to."""
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{what} {path}: permission denied")


class ReportFile:
    """The report's file, claimed before the analysis: a temporary file is created beside `path` at once
    (so a path that cannot be written fails before any work) and renamed over `path` once the report is
    written, so a failure part-way never leaves half a report or loses the one before."""

    def __init__(self, path: Path) -> None:
        check_output_path(path)
        self.path = path
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as e:
            raise ConfigError(f"--output {path}: cannot be written ({e.strerror or e})") from None
        os.close(fd)
        self.tmp = Path(name)

    @contextmanager
    def open(self) -> Iterator[IO[str]]:
        """Write the report into the temporary file; `path` is replaced when the block ends."""
        try:
            with open(self.tmp, "w") as f:
                yield f
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(self.tmp, 0o666 & ~mask)  # mkstemp makes it private; a report is an ordinary file
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise ConfigError(f"--output {self.path}: cannot be written ({e.strerror or e})") from None
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


def probe_inputs(files: Sequence[Path], max_pixels: int | None = None) -> list[MediaKind | MFFMoEError]:
    """Each input's media kind by content, or its typed error (missing, unreadable, empty, not media, an
    image over the pixel limits), in input order."""
    from mffmoe.media.image import check_image
    from mffmoe.media.probe import MediaKind, probe_kind

    out: list[MediaKind | MFFMoEError] = []
    for f in files:
        try:
            kind = probe_kind(f)
            if kind is MediaKind.IMAGE:
                check_image(f, max_pixels)
            out.append(kind)
        except MFFMoEError as e:
            out.append(e)
    return out
