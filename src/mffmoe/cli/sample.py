"""`mffmoe sample`: a small generated image and video to try the pipeline on, without any data."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mffmoe.cli.output import fail


def sample(
    out: Annotated[Path, typer.Argument(help="Directory to write sample media into.")] = Path("samples"),
) -> None:
    """Generate a small sample set (an image and a short video) to try the pipeline on."""
    from mffmoe.testing.media import make_image, make_video

    if out.exists() and not out.is_dir():
        raise fail(f"{out}: is a file; give a directory to write the samples into")
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = [make_image(out / "sample.jpg", 640, 480, quality=92),
                 make_video(out / "sample.mp4", seconds=2.0, fps=25, width=320, height=240)]
    except OSError as e:  # a parent that is a file, no permission, a read-only file system
        raise fail(f"{out}: cannot write the samples there ({e.strerror or e})") from None
    for p in paths:
        print(p)
