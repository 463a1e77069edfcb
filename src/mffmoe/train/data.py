"""Training data: labelled files (`mffmoe.datasets`) turned into samples and batches.

Training reads images with the detector's own decoder (`load_image`) and preprocessing (`preprocess`),
and video frames through `mffmoe.media.source` as the detector does (same frame indices, rotation
applied), so a model is trained on exactly the tensors `mffmoe analyze` will feed it. Sampled video
frames are decoded once and kept as lossless PNGs in a cache, so epochs after the first do not decode
video again. A file that cannot be read is reported and left out; it never stops a batch or a run.

Face crops (`--crop faces|auto`): the detector's own faces step (`mffmoe.faces.finder.FaceFinder`: detect,
keep by `select_faces`, `crop_face`) runs once per image and per sampled video frame when the run starts;
each kept face's crop is kept as a lossless PNG and becomes one sample (labelled as its file), which then
goes through the augmentations and `preprocess` exactly as a whole image does. An image or frame where no
face is kept is one whole-frame sample, as inference then scores the whole frame; so is an image too large
for inference to look for faces in (over `preprocess.STRIP_PIXELS`).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from mffmoe._util.fs import atomic_write
from mffmoe.datasets import FAKE, REAL, LabeledPath
from mffmoe.errors import DatasetError, MFFMoEError
from mffmoe.media.image import load_image, open_image
from mffmoe.media.preprocess import preprocess
from mffmoe.media.probe import MediaKind, probe_kind
from mffmoe.media.source import open_video
from mffmoe.train.augment import Augment

if TYPE_CHECKING:
    from mffmoe.faces.finder import FaceFinder


@dataclass(frozen=True)
class Sample:
    """One training/validation example: an image file, or one cached frame of a video (`group`)."""

    source: str              # file to decode (the image, the cached frame PNG, or the cached face crop PNG)
    label: int
    group: str               # the original media file (video-level pooling)
    frame_index: int | None = None
    face: int | None = None  # faces mode: which kept face of the image/frame (0: the largest); None: whole frame


def require_both_classes(items: Sequence[LabeledPath] | Sequence[Sample], what: str) -> None:
    labels = {it.label for it in items}
    if labels != {REAL, FAKE}:
        have = "real" if labels == {REAL} else "fake" if labels == {FAKE} else "no"
        raise DatasetError(f"{what} has only {have} items; training and validation need both real and fake")


def split(items: Sequence[LabeledPath], fraction: float, seed: int) -> tuple[list[LabeledPath], list[LabeledPath]]:
    """Stratified split by file (a video's frames never straddle train and validation)."""
    if fraction <= 0:
        return list(items), []
    from sklearn.model_selection import train_test_split

    try:
        train, val = train_test_split(list(items), test_size=fraction, random_state=seed,
                                      stratify=[it.label for it in items])
    except ValueError as e:
        raise DatasetError(f"cannot split off {fraction:.0%} for validation: {e}. Use more data, another "
                           f"--val-split, or a separate --val set") from e
    return list(train), list(val)


# --- video frames ----------------------------------------------------------------------------------
def _cache_key(path: Path) -> str:
    st = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"{path.stem[:40]}-{digest}"


def extract_frames(path: str | os.PathLike[str], n_frames: int,
                   cache_dir: Path) -> tuple[list[tuple[int, str]], list[str]]:
    """Decode the `n_frames` frames the detector would sample and keep them as PNGs (done once per
    file and frame count; a finished extraction is marked by its index.json). Returns
    ([(frame_index, png_path)], [messages of frames that failed])."""
    path = Path(path)
    folder = cache_dir / f"{_cache_key(path)}-n{n_frames}"
    index = folder / "index.json"
    if index.exists():
        data = json.loads(index.read_text())
        return [(int(i), str(folder / name)) for i, name in data["frames"]], list(data["failed"])
    folder.mkdir(parents=True, exist_ok=True)
    frames, failed = [], []
    with open_video(path, n_frames) as video:
        for sample in video.samples():
            if sample.image is None:
                failed.append(f"frame {sample.frame_index}: {sample.error}")
                continue
            name = f"{sample.frame_index:07d}.png"
            Image.fromarray(sample.image).save(folder / name, compress_level=1)
            frames.append((sample.frame_index, name))
        wanted = set(video.summary.indices)
    frames = [(i, name) for i, name in frames if i in wanted]  # the final indices (see VideoSummary)
    with atomic_write(index, "w") as f:
        f.write(json.dumps({"source": str(path), "frames": frames, "failed": failed}))
    return [(i, str(folder / name)) for i, name in frames], failed


# --- face crops ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaceCropping:
    """Where face samples come from: the finder inference builds for these settings, and the folder
    their crops are kept in (one subfolder per image or frame, marked done by its index.json)."""

    finder: FaceFinder
    cache_dir: Path

    def key(self) -> str:
        f = self.finder
        settings = f"{type(f.detector).__name__}:{f.margin!r}:{f.align}:{f.min_face}:{f.max_faces}"
        return hashlib.sha1(settings.encode()).hexdigest()[:8]


_FINDER_LOCK = threading.Lock()  # one face detection at a time: the detectors are not known to be thread-safe


def face_crops(path: str, faces: FaceCropping) -> list[str] | None:
    """The kept faces' crops of the image (or cached frame) at `path` as PNGs, largest first, found once
    and cached: [] when no face is kept, None when inference would not look (an image too large to be
    decoded whole). Raises the decoder's MFFMoEError."""
    folder = faces.cache_dir / f"{_cache_key(Path(path))}-{faces.key()}"
    index = folder / "index.json"
    if index.exists():
        return [str(folder / name) for name in json.loads(index.read_text())["faces"]]
    image = open_image(path)
    if not isinstance(image, Image.Image):  # read in strips: inference scores such an image whole
        return None
    rgb = np.asarray(image)
    with _FINDER_LOCK:
        crops = faces.finder.crops(rgb)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, crop in enumerate(crops):
        name = f"face-{k:02d}.png"
        Image.fromarray(crop.pixels).save(folder / name, compress_level=1)
        names.append(name)
    with atomic_write(index, "w") as f:
        f.write(json.dumps({"source": str(path), "faces": names,
                            "boxes": [list(c.crop_box) for c in crops]}))
    return [str(folder / name) for name in names]


def _face_samples(base: Sample, faces: FaceCropping | None) -> list[Sample]:
    """Faces mode: one sample per kept face of `base`'s image/frame, else `base` itself (whole frame)."""
    if faces is None:
        return [base]
    crops = face_crops(base.source, faces)
    if not crops:
        return [base]
    return [Sample(src, base.label, base.group, base.frame_index, k) for k, src in enumerate(crops)]


def prepare_samples(items: Sequence[LabeledPath], frames_per_video: int, cache_dir: Path, workers: int = 2,
                    progress: Callable[[int, int], None] | None = None, faces: FaceCropping | None = None,
                    ) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Items -> samples: an image is one sample, a video its sampled frames; with `faces`, each image or
    frame gives one sample per kept face instead (none kept: the whole frame). Files that are neither, or
    videos with no decodable frame, are returned as (path, error) and left out."""
    def one(item: LabeledPath) -> tuple[list[Sample], str | None]:
        try:
            if probe_kind(item.path) is MediaKind.IMAGE:
                return _face_samples(Sample(item.path, item.label, item.path), faces), None
            frames, _failed = extract_frames(item.path, frames_per_video, cache_dir)
            if not frames:
                return [], f"none of the sampled frames could be decoded ({'; '.join(_failed[:3])})"
            return [s for idx, src in frames
                    for s in _face_samples(Sample(src, item.label, item.path, idx), faces)], None
        except MFFMoEError as e:
            return [], f"{type(e).__name__}: {e}"

    samples: list[Sample] = []
    failures: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mffmoe-frames") as pool:
        for n, (item, (got, error)) in enumerate(zip(items, pool.map(one, items), strict=True), 1):
            samples.extend(got)
            if error:
                failures.append((item.path, error))
            if progress:
                progress(n, len(items))
    return samples, failures


def save_samples(path: Path, **lists: Sequence[Sample]) -> None:
    path.write_text(json.dumps({k: [asdict(s) for s in v] for k, v in lists.items()}))


def load_samples(path: Path) -> dict[str, list[Sample]]:
    return {k: [Sample(**s) for s in v] for k, v in json.loads(path.read_text()).items()}


# --- torch datasets -------------------------------------------------------------------------------
class SampleDataset(torch.utils.data.Dataset):
    """Indexed by (epoch, i): the augmentation of sample i in an epoch is seeded by (seed, epoch, i)."""

    def __init__(self, samples: Sequence[Sample], input_size: int, augment: Augment | None = None,
                 seed: int = 0) -> None:
        self.samples = list(samples)
        self.input_size = input_size
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor | None, int, int, str | None]:
        epoch, i = key
        sample = self.samples[i]
        try:
            image = load_image(sample.source)
        except MFFMoEError as e:
            return None, sample.label, i, f"{type(e).__name__}: {e}"
        if self.augment is not None and self.augment.names:
            image = self.augment(image, np.random.default_rng([self.seed, epoch, i]))
        return torch.from_numpy(preprocess(image, self.input_size)), sample.label, i, None


@dataclass
class Batch:
    x: torch.Tensor | None        # [B, 3, S, S]; None when every sample failed
    y: torch.Tensor
    indices: list[int]
    failures: list[tuple[int, str]]


def collate(rows: list[tuple[torch.Tensor | None, int, int, str | None]]) -> Batch:
    ok = [(x, label, i) for x, label, i, _ in rows if x is not None]
    return Batch(x=torch.stack([x for x, _, _ in ok]) if ok else None,
                 y=torch.tensor([label for _, label, _ in ok], dtype=torch.long),
                 indices=[i for _, _, i in ok],
                 failures=[(r[2], r[3] or "") for r in rows if r[0] is None])


class EpochOrder(torch.utils.data.Sampler):
    """Keys (epoch, i) in a permutation seeded by (seed, epoch), starting `skip` keys in (resume)."""

    def __init__(self, n: int, epoch: int, seed: int, shuffle: bool = True, skip: int = 0) -> None:
        self.n, self.epoch, self.seed, self.shuffle, self.skip = n, epoch, seed, shuffle, skip

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        return [int(i) for i in np.random.default_rng([self.seed, self.epoch]).permutation(self.n)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self.order()[self.skip:]])

    def __len__(self) -> int:
        return max(0, self.n - self.skip)
