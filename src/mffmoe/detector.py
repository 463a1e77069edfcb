"""analyze(): media -> decode -> preprocess -> engine -> pooling -> result.

`Detector` is the one entry point; `MFFMoEDetectorV1` keeps the host's API (config, `load()`,
`analyze(media_path=...)`) on top of it.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from mffmoe.config import (DEFAULT_BATCH_SIZE, DEFAULT_DEVICE, DEFAULT_ENGINE, DEFAULT_FRAMES,
                           DEFAULT_INPUT_SIZE, DEFAULT_POOLING, DEFAULT_ROSTER, DEFAULT_THRESHOLD, MODEL_NAME,
                           DetectorConfig, MFFMoEV1Config, resolve_weights_dir)
from mffmoe.engine import Engine, create_engine
from mffmoe.errors import (ConfigError, MediaTypeDisabledError, MFFMoEError, NotLoadedError,
                           VideoDecodeError)
from mffmoe.media.image import load_image
from mffmoe.media.preprocess import preprocess
from mffmoe.media.probe import MediaKind, probe_kind
from mffmoe.media.video import VideoSampler
from mffmoe.model.checkpoint import CheckpointInfo, load_weights, untrained_model
from mffmoe.pooling import get_pooling
from mffmoe.results import (AnalysisResult, FrameFailure, FramePrediction, ImageAnalysisResult,
                            VideoAnalysisResult, confidence, label)

Progress = Callable[[int, int], None]  # (done, total)
UNTRAINED_NOTE = "UNTRAINED: random weights (--untrained); this score means nothing"


@dataclass
class _Prepared:
    """An input after decoding: a preprocessed image, or a video left for the sampler."""

    path: str
    kind: MediaKind | None = None
    tensor: torch.Tensor | None = None
    dimensions: dict[str, int] | None = None
    decode_time: float = 0.0
    error: MFFMoEError | None = None


class Detector:
    def __init__(self, engine: Engine, info: CheckpointInfo, *, threshold: float = DEFAULT_THRESHOLD,
                 frames: int = DEFAULT_FRAMES, batch_size: int = DEFAULT_BATCH_SIZE, pooling: str = DEFAULT_POOLING,
                 untrained: bool = False, max_image_pixels: int | None = None,
                 model_name: str = MODEL_NAME, early_exit: bool = False) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError("threshold must be in [0, 1]")
        self.engine = engine
        self.info = info
        self.threshold = threshold
        self.frames = frames
        self.batch_size = max(1, batch_size)
        self.pooling = pooling
        get_pooling(pooling)
        self.untrained = untrained
        self.max_image_pixels = max_image_pixels
        self.model_name = model_name
        self.early_exit = early_exit  # exact: see mffmoe.early_exit

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: DetectorConfig) -> Detector:
        """Load the weights (or build random ones) and the engine that `config` names."""
        c = config
        if c.untrained:
            model, info = untrained_model(c.roster, c.input_size, seed=c.seed)
        else:
            model, info = load_weights(resolve_weights_dir(c.weights), allow_missing_ema=c.allow_missing_ema)
        engine = create_engine(c.engine, model, info, device=c.device, **c.engine_options)
        return cls(engine, info, threshold=c.threshold, frames=c.frames, batch_size=c.batch_size,
                   pooling=c.pooling, untrained=c.untrained, max_image_pixels=c.max_image_pixels,
                   model_name=c.model_name, early_exit=c.early_exit)

    @classmethod
    def from_dir(cls, weights: str | os.PathLike[str] | None = None, *, device: str = DEFAULT_DEVICE,
                 engine: str = DEFAULT_ENGINE, allow_missing_ema: bool = False,
                 engine_options: dict | None = None, **kwargs) -> Detector:
        """Load weights (`weights` > $MFFMOE_WEIGHTS > ./models/MFF-MoE-V1) and build an engine
        (`engine_options` go to the engine, e.g. `{"lean": True}` for the torch engine). The other
        keywords are DetectorConfig fields."""
        return cls.from_config(DetectorConfig(weights=weights, device=device, engine=engine,
                                              allow_missing_ema=allow_missing_ema,
                                              engine_options=engine_options or {}, **kwargs))

    @classmethod
    def untrained(cls, roster: Sequence[str] = DEFAULT_ROSTER, input_size: int = DEFAULT_INPUT_SIZE, *,
                  device: str = DEFAULT_DEVICE, engine: str = DEFAULT_ENGINE, seed: int = 0,
                  engine_options: dict | None = None, **kwargs) -> Detector:
        """Random weights, to run the pipeline without the official files. Every result says so."""
        return cls.from_config(DetectorConfig(untrained=True, roster=tuple(roster), input_size=input_size,
                                              device=device, engine=engine, seed=seed,
                                              engine_options=engine_options or {}, **kwargs))

    @property
    def input_size(self) -> int:
        return self.engine.input_size

    # -- core steps ------------------------------------------------------------------------------
    def score_batch(self, batch: torch.Tensor, threshold: float | None = None) -> np.ndarray:
        """[N, 3, S, S] -> [N, E] per-expert P(fake), run in chunks of `batch_size`. With early exit (and
        a `threshold`), experts that did not need to run are NaN."""
        if self.early_exit and threshold is not None:
            from mffmoe.early_exit import run_images
            parts = [run_images(self.engine, batch[i:i + self.batch_size], threshold).probs
                     for i in range(0, len(batch), self.batch_size)]
        else:
            parts = [self.engine.predict(batch[i:i + self.batch_size])
                     for i in range(0, len(batch), self.batch_size)]
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, len(self.engine.roster)))

    def _fields(self, score: float, expert_scores: Sequence[float], threshold: float) -> dict:
        return {
            "prediction": label(score, threshold),
            "confidence": confidence(score, threshold),
            "score": score,
            "expert_scores": [float(s) for s in expert_scores],
            "threshold": threshold,
            "untrained": self.untrained,
            "model": self.model_name,
            "note": UNTRAINED_NOTE if self.untrained else None,
        }

    def _early_fields(self, fields: dict, low: float, high: float, ran: Sequence[int]) -> dict:
        """Early-exit results: `score` and `expert_scores` cover the experts that ran (roster order); the
        full ensemble's score lies in `score_interval`; the label is the full ensemble's."""
        n = len(self.engine.roster)
        fields.update(experts_run=len(ran), score_interval=(float(low), float(high)))
        if len(ran) < n:
            note = (f"early exit: experts {list(ran)} of {n} ran; score is their mean, the full ensemble's "
                    f"lies in [{low:.4f}, {high:.4f}]")
            fields["note"] = "; ".join(x for x in (fields.get("note"), note) if x)
        return fields

    def _image_result(self, experts: np.ndarray, dims: dict[str, int], seconds: float,
                      threshold: float) -> ImageAnalysisResult:
        if self.early_exit and threshold is not None:
            from mffmoe.early_exit import interval
            ran = [i for i, v in enumerate(experts) if not np.isnan(v)]
            low, high = interval(np.asarray(experts, dtype=np.float64)[None])
            fields = self._fields(float(np.mean(experts[ran])), experts[ran], threshold)
            return ImageAnalysisResult(processing_time=seconds, dimensions=dims,
                                       **self._early_fields(fields, low[0], high[0], ran))
        score = float(np.mean(experts))
        return ImageAnalysisResult(processing_time=seconds, dimensions=dims,
                                   **self._fields(score, experts, threshold))

    # -- public API ------------------------------------------------------------------------------
    def analyze(self, path: str | os.PathLike[str], *, frames: int | None = None, pooling: str | None = None,
                threshold: float | None = None, progress: Progress | None = None) -> AnalysisResult:
        """Analyze one image or video file (type judged by content). Raises a typed MFFMoEError."""
        start = time.perf_counter()
        threshold = self.threshold if threshold is None else threshold
        kind = probe_kind(path)
        if kind is MediaKind.VIDEO:
            return self._analyze_video(path, frames or self.frames, pooling or self.pooling, threshold,
                                       progress, start)
        image = load_image(path, self.max_image_pixels)
        return self.analyze_image(image, threshold=threshold, _start=start)

    def analyze_image(self, image: Image.Image, *, threshold: float | None = None,
                      _start: float | None = None) -> ImageAnalysisResult:
        """Analyze an in-memory PIL image (converted to RGB if needed)."""
        start = time.perf_counter() if _start is None else _start
        threshold = self.threshold if threshold is None else threshold
        dims = {"width": image.width, "height": image.height}
        experts = self.score_batch(preprocess(image, self.input_size).unsqueeze(0), threshold)[0]
        return self._image_result(experts, dims, time.perf_counter() - start, threshold)

    def analyze_many(self, paths: Iterable[str | os.PathLike[str]], *, frames: int | None = None,
                     pooling: str | None = None, threshold: float | None = None,
                     on_video_progress: Progress | None = None, workers: int = 2,
                     ) -> Iterator[tuple[str, AnalysisResult | MFFMoEError]]:
        """Analyze many files in input order. Images are decoded ahead on worker threads and batched
        together through the engine; a failed file yields its error and the rest go on."""
        threshold = self.threshold if threshold is None else threshold
        paths = [str(p) for p in paths]
        pending: list[_Prepared] = []

        def flush() -> Iterator[tuple[str, AnalysisResult | MFFMoEError]]:
            if not pending:
                return
            t0 = time.perf_counter()
            experts = self.score_batch(torch.stack([p.tensor for p in pending]), threshold)
            share = (time.perf_counter() - t0) / len(pending)
            for prep, row in zip(pending, experts):
                yield prep.path, self._image_result(row, prep.dimensions, prep.decode_time + share, threshold)
            pending.clear()

        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mffmoe-decode") as pool:
            window = max(2 * self.batch_size, 4)
            futures = [pool.submit(self._prepare, p) for p in paths[:window]]
            for i in range(len(paths)):
                if i + window < len(paths):
                    futures.append(pool.submit(self._prepare, paths[i + window]))
                prep = futures[i].result()
                futures[i] = None  # type: ignore[call-overload]  # free the tensor once consumed
                if prep.kind is MediaKind.IMAGE and prep.error is None:
                    pending.append(prep)
                    if len(pending) >= self.batch_size:
                        yield from flush()
                    continue
                yield from flush()
                if prep.error is not None:
                    yield prep.path, prep.error
                    continue
                try:
                    yield prep.path, self._analyze_video(prep.path, frames or self.frames, pooling or self.pooling,
                                                         threshold, on_video_progress, time.perf_counter())
                except MFFMoEError as e:
                    yield prep.path, e
            yield from flush()

    def _prepare(self, path: str) -> _Prepared:
        start = time.perf_counter()
        try:
            kind = probe_kind(path)
            if kind is MediaKind.VIDEO:
                return _Prepared(path, kind)
            image = load_image(path, self.max_image_pixels)
            return _Prepared(path, kind, preprocess(image, self.input_size),
                             {"width": image.width, "height": image.height}, time.perf_counter() - start)
        except MFFMoEError as e:
            return _Prepared(path, error=e)

    # -- video -----------------------------------------------------------------------------------
    def _analyze_video(self, path: str | os.PathLike[str], n_frames: int, pooling: str, threshold: float,
                       progress: Progress | None, start: float) -> VideoAnalysisResult:
        get_pooling(pooling)  # an unknown pooling fails before any decoding
        sampler = VideoSampler(path, n_frames)
        # Decoding and preprocessing run on a thread while the engine scores earlier frames.
        q: queue.Queue = queue.Queue(maxsize=2 * self.batch_size)
        stop = threading.Event()
        size = self.input_size

        def produce() -> None:
            try:
                for sample in sampler:
                    if stop.is_set():
                        break
                    tensor = None if sample.image is None else preprocess(sample.image, size)
                    sample.image = None
                    q.put((sample, tensor))
            except Exception as e:  # surfaced to the caller below, never swallowed
                q.put(e)
            finally:
                q.put(None)

        worker = threading.Thread(target=produce, name="mffmoe-video-decode", daemon=True)
        worker.start()
        scored: dict[int, tuple[float, float, np.ndarray]] = {}   # frame_index -> (timestamp, ..)
        failures: dict[int, FrameFailure] = {}
        batch: list[tuple] = []
        error: BaseException | None = None

        early = None
        if self.early_exit:
            from mffmoe.early_exit import VideoEarlyExit
            early = VideoEarlyExit(self.engine, pooling, threshold)

        def run_batch() -> None:
            stacked = torch.stack([t for _, t in batch])
            experts = early.add(stacked) if early is not None else self.score_batch(stacked)
            for (sample, _), row in zip(batch, experts):
                scored[sample.frame_index] = (sample.timestamp, float(np.mean(row)), row)
            batch.clear()
            if progress:
                progress(len(scored) + len(failures), len(sampler.indices))

        try:
            while True:
                item = q.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    error = item
                    break
                sample, tensor = item
                if tensor is None:
                    failures[sample.frame_index] = FrameFailure(frame_index=sample.frame_index,
                                                                timestamp=sample.timestamp, error=sample.error)
                    continue
                batch.append((sample, tensor))
                if len(batch) >= self.batch_size:
                    run_batch()
            if batch:
                run_batch()
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
            sampler.close()
        if error is not None:
            if isinstance(error, MFFMoEError):
                raise error
            raise VideoDecodeError(f"{path}: decoding failed ({type(error).__name__}: {error})") from error
        if early is not None:  # run further experts on all frames until the video's label is fixed
            outcome = early.finish(self.batch_size)
            for index, row in zip(list(scored), outcome.probs):
                ts = scored[index][0]
                scored[index] = (ts, float(np.nanmean(row)), row)
        return self._video_result(path, sampler, scored, failures, pooling, threshold, start)

    def _video_result(self, path: str | os.PathLike[str], sampler, scored: dict[int, tuple[float, float, np.ndarray]],
                      failures: dict[int, FrameFailure], pooling: str, threshold: float,
                      start: float) -> VideoAnalysisResult:
        """Pool the scored frames into the video's result. `sampler` needs `indices`, `info`, `total` and
        `count_exact` as they stand after iteration (scans pass a worker's summary of its sampler)."""
        pool_fn = get_pooling(pooling)
        wanted = sampler.indices
        keep = [i for i in wanted if i in scored]
        failed = [failures.get(i) or FrameFailure(frame_index=i, timestamp=i / sampler.info.fps,
                                                  error="frame not reached before the end of the stream")
                  for i in wanted if i not in scored]
        if not keep:
            raise VideoDecodeError(f"{path}: none of the {len(wanted)} sampled frames could be decoded")
        frame_predictions = []
        for n, i in enumerate(wanted):
            if i in scored:
                ts, s, row = scored[i]
                frame_predictions.append(FramePrediction(index=n, frame_index=i, timestamp=ts, score=s,
                                                         prediction=label(s, threshold),
                                                         expert_scores=[float(v) for v in row if not np.isnan(v)]))
        frame_scores = [scored[i][1] for i in keep]
        video_score = float(np.clip(pool_fn(frame_scores), 0.0, 1.0))
        rows = np.stack([scored[i][2] for i in keep])
        ran = [e for e in range(rows.shape[1]) if not np.isnan(rows[:, e]).any()]
        expert_means = np.mean(rows[:, ran], axis=0)
        info = sampler.info
        notes = []
        if self.untrained:
            notes.append(UNTRAINED_NOTE)
        if failed:
            notes.append(f"{len(failed)} of {len(wanted)} sampled frames could not be decoded")
        if info.frame_count and sampler.count_exact and info.frame_count != sampler.total:
            notes.append(f"container states {info.frame_count} frames; the stream has {sampler.total}")
        fields = self._fields(video_score, expert_means, threshold)
        fields["note"] = "; ".join(notes) or None
        if self.early_exit:
            from mffmoe.early_exit import interval
            lows, highs = interval(rows)
            fields = self._early_fields(fields, float(np.clip(pool_fn(lows), 0, 1)),
                                        float(np.clip(pool_fn(highs), 0, 1)), ran)
        rotated = abs(info.rotation) % 180 == 90
        return VideoAnalysisResult(
            processing_time=time.perf_counter() - start,
            dimensions={"width": info.height if rotated else info.width,
                        "height": info.width if rotated else info.height},
            frame_count=sampler.total, frames_analyzed=len(keep), frames_failed=len(failed),
            failed_frames=failed, frame_predictions=frame_predictions, fps=info.fps, duration=info.duration,
            pooling=pooling,
            metrics={"final_average_score": float(np.mean(frame_scores)), "pooled_score": video_score,
                     "pooling": pooling, "min_frame_score": float(np.min(frame_scores)),
                     "max_frame_score": float(np.max(frame_scores)),
                     "std_frame_score": float(np.std(frame_scores)),
                     "fake_frame_ratio": float(np.mean([s >= threshold for s in frame_scores]))},
            **fields,
        )


class MFFMoEDetectorV1:
    """The host's detector API: `MFFMoEDetectorV1(config).load()` then `.analyze(media_path=...)`."""

    def __init__(self, config: MFFMoEV1Config | None = None) -> None:
        self.config = config or MFFMoEV1Config()
        self.detector: Optional[Detector] = None

    def load(self) -> MFFMoEDetectorV1:
        self.detector = Detector.from_config(self.config.detector_config())
        return self

    def analyze(self, media_path: str | os.PathLike[str], **kwargs) -> AnalysisResult:
        if self.detector is None:
            raise NotLoadedError("call load() before analyze()")
        kind = probe_kind(media_path)
        if kind is MediaKind.IMAGE and not self.config.isImage:
            raise MediaTypeDisabledError(f"{media_path}: images are disabled in this configuration (isImage=False)")
        if kind is MediaKind.VIDEO and not self.config.isVideo:
            raise MediaTypeDisabledError(f"{media_path}: videos are disabled in this configuration (isVideo=False)")
        return self.detector.analyze(media_path, **kwargs)
