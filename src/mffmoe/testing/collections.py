"""Generated collections for scan tests, benchmarks and demos: images, videos, duplicates, broken files."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from mffmoe.testing.media import make_image, make_video


def make_collection(root: str | os.PathLike[str], images: int = 6, videos: int = 2, size: tuple[int, int] = (96, 72),
                    video_size: tuple[int, int] | None = None, video_seconds: float = 0.6, fps: int = 10,
                    broken: bool = True) -> dict[str, list[Path]]:
    """Write a collection under `root` and return its files by role: `images`, `videos`, `duplicates`
    (same bytes as `images[0]` and `videos[0]`, one under a misleading extension), `broken` (truncated
    PNG, empty file, text file, cut video) and `hidden` (under a dot-folder, which scans skip)."""
    root = Path(root)
    w, h = size
    vw, vh = video_size or size
    made: dict[str, list[Path]] = {"images": [], "videos": [], "duplicates": [], "broken": [], "hidden": []}
    for i in range(images):
        fmt = ("jpg", "png", "webp")[i % 3]
        sub = root / ("a" if i % 2 else "b/c")
        made["images"].append(make_image(sub / f"img{i:03d}.{fmt}", w + 8 * (i % 8), h + 4 * (i % 8), seed=i))
    for i in range(videos):
        made["videos"].append(make_video(root / "v" / f"clip{i:02d}.mp4", seconds=video_seconds, fps=fps, width=vw,
                                         height=vh, seed=i, gop=4))
    pairs = []
    if images:
        pairs.append((made["images"][0], "copy_of_img000.jpg"))
    if videos:
        pairs.append((made["videos"][0], "dup/clip00_again.bin"))
    for src, name in pairs:
        dst = root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        made["duplicates"].append(dst)
    if broken and images > 1 and videos > 1:
        folder = root / "broken"
        folder.mkdir(parents=True, exist_ok=True)
        data = made["images"][1].read_bytes()
        (folder / "truncated.png").write_bytes(data[: len(data) // 3])
        (folder / "empty.jpg").write_bytes(b"")
        (folder / "notes.txt").write_text("not media at all\n")
        (folder / "cut.mp4").write_bytes(made["videos"][1].read_bytes()[:200])
        made["broken"] = sorted(folder.iterdir())
    made["hidden"].append(make_image(root / ".cache" / "skip.jpg", 32, 32))
    return made
