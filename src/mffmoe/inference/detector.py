"""analyze(): media -> decode -> preprocess -> engine -> pooling -> result.

`Detector` orchestrates; the steps live elsewhere: decoding in `mffmoe.media.source`, batch scoring in
`inference/batching.py`, result building in `inference/assemble.py` (which scans use too), early exit
in the engine wrapper `mffmoe.engine.early_exit`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from mffmoe.calibration import Calibration, load_calibration
from mffmoe.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_ENGINE,
    DEFAULT_FRAMES,
    DEFAULT_INPUT_SIZE,
    DEFAULT_POOLING,
    DEFAULT_ROSTER,
    DEFAULT_THRESHOLD,
    MODEL_NAME,
    DetectorConfig,
    resolve_weights_dir,
)
from mffmoe.engine import create_engine
from mffmoe.engine.base import Engine
from mffmoe.engine.early_exit import EarlyExitEngine
from mffmoe.engine.memory import release_idle
from mffmoe.engine.weights import WeightsSource
from mffmoe.errors import ConfigError, MFFMoEError
from mffmoe.faces.blazeface import STRIP_PIXELS
from mffmoe.faces.finder import FaceFinder, FaceInput
from mffmoe.inference.assemble import (
    NO_FACE_NOTE,
    ScoredFrame,
    face_image_result,
    image_result,
    out_of_scope,
    video_result,
    with_note,
    with_provenance,
)
from mffmoe.inference.batching import (
    begin_video,
    lookahead,
    score_batch,
    score_items,
    stack,
    useful_batch,
    video_step,
)
from mffmoe.inference.faces import score_video_faces
from mffmoe.inference.trust import judge_scope
from mffmoe.media.image import image_jpeg_quality, to_rgb
from mffmoe.media.preprocess import preprocess
from mffmoe.media.probe import MediaKind
from mffmoe.media.source import NO_INPUT, Frame, ImageItem, VideoItem, decode_ahead, open_media
from mffmoe.model.info import CheckpointInfo, trained_settings
from mffmoe.pooling import Pooling, get_pooling
from mffmoe.results import (
    AnalysisResult,
    CalibrationUse,
    FaceResult,
    FrameFailure,
    ImageAnalysisResult,
    VideoAnalysisResult,
)

Progress = Callable[[int, int], None]  # (done, total)
R = TypeVar("R", ImageAnalysisResult, VideoAnalysisResult)


class Detector:
    """Scores images and videos with one engine; built by `from_config`, `from_dir` or `untrained`."""

    def __init__(self, engine: Engine, info: CheckpointInfo, *, threshold: float = DEFAULT_THRESHOLD,
                 frames: int = DEFAULT_FRAMES, batch_size: int = DEFAULT_BATCH_SIZE, pooling: str = DEFAULT_POOLING,
                 untrained: bool = False, max_image_pixels: int | None = None,
                 model_name: str = MODEL_NAME, early_exit: bool = False, crop: str = "frame",
                 finder: FaceFinder | Callable[[], FaceFinder] | None = None, face_pooling: str = "max") -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError("threshold must be in [0, 1]")
        self.engine = engine
        self.info = info
        self.threshold = threshold
        self.frames = frames
        # fitted to the engine (`Engine.max_useful_batch`, `min_useful_batch`): scores do not change
        self.batch_size = useful_batch(engine, batch_size)
        self.pooling = pooling
        self.pool: Pooling = get_pooling(pooling)
        #: True on random weights (`Detector.untrained`): every result then says its score means nothing.
        self.random_weights = untrained
        self.max_image_pixels = max_image_pixels
        self.model_name = model_name
        self.early_exit = early_exit  # exact: see mffmoe.engine.early_exit
        #: frame: the spec's whole-frame input; faces/auto: face crops, the whole frame (flagged) without one
        self.crop = _check_crop(crop)
        # a finder, or how to build one the first time a call asks for faces (`crop=` on a call)
        self._finder: FaceFinder | None = finder if isinstance(finder, FaceFinder) else None
        self._make_finder = None if isinstance(finder, FaceFinder) else finder
        self._finder_lock = threading.Lock()
        if crop != "frame":
            self.finder_for(crop)  # fails now, not on the first call
        self.face_pooling = face_pooling
        #: the configuration it was built from, crop and face settings resolved (`from_config`), else None
        self.config: DetectorConfig | None = None
        #: the weights' calibration (`mffmoe calibrate`; loaded by `from_config`), and why it cannot be used
        self.calibration: Calibration | None = None
        self.calibration_problem: str | None = None
        #: read each analysed file's provenance (`provenanced`); off for callers that only want scores
        self.read_provenance = True

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: DetectorConfig) -> Detector:
        """Load the weights (or build random ones) and the engine that `config` names."""
        if config.untrained:
            from mffmoe.model.checkpoint import untrained_model

            model, info = untrained_model(config.roster, config.input_size, seed=config.seed)
            weights = WeightsSource.of(model, info)
        else:  # identified now, tensors loaded only by an engine that needs the torch model
            weights = WeightsSource(resolve_weights_dir(config.weights), allow_missing_ema=config.allow_missing_ema)
            info = weights.info
        c = config.with_trained(trained_settings(info))  # crop and face settings: as the weights were trained
        crop, margin, align, min_face = c.crop, c.face_margin, c.align, c.min_face
        assert crop is not None and margin is not None and align is not None and min_face is not None

        options = {**c.engine_options, **({"precision": c.precision} if c.precision != "fp32" else {})}
        engine = create_engine(c.engine, weights, info, device=c.device, **options)

        def finder() -> FaceFinder:
            # beside experts held resident, large frames are searched in strips (`faces.blazeface`)
            lean = {"strip_pixels": STRIP_PIXELS} if c.face_detector == "blazeface" and getattr(
                engine, "resident", True) else {}
            return FaceFinder(c.face_detector, margin=margin, align=align, min_face=min_face, max_faces=c.max_faces,
                              detector_options=lean)
        info = weights.info  # the fuller record when the model was loaded (EMA update counts)
        detector = cls(engine, info, threshold=c.threshold, frames=c.frames, batch_size=c.batch_size,
                       pooling=c.pooling, untrained=c.untrained, max_image_pixels=c.max_image_pixels,
                       model_name=c.model_name, early_exit=c.early_exit, crop=crop, finder=finder,
                       face_pooling=c.face_pooling)
        detector.config = c
        if not c.untrained:
            detector.calibration, detector.calibration_problem = load_calibration(info)
        return detector

    @classmethod
    def from_dir(cls, weights: str | os.PathLike[str] | None = None, *, device: str = DEFAULT_DEVICE,
                 engine: str = DEFAULT_ENGINE, allow_missing_ema: bool = False,
                 engine_options: dict[str, Any] | None = None, **kwargs: Any) -> Detector:
        """Load weights (`weights` > $MFFMOE_WEIGHTS > ./models/MFF-MoE-V1) and build an engine
        (`engine_options` go to the engine, e.g. `{"lean": True}` for the torch engine). The other
        keywords are DetectorConfig fields."""
        return cls.from_config(DetectorConfig(weights=weights, device=device, engine=engine,
                                              allow_missing_ema=allow_missing_ema,
                                              engine_options=engine_options or {}, **kwargs))

    @classmethod
    def untrained(cls, roster: Sequence[str] = DEFAULT_ROSTER, input_size: int = DEFAULT_INPUT_SIZE, *,
                        device: str = DEFAULT_DEVICE, engine: str = DEFAULT_ENGINE, seed: int = 0,
                        engine_options: dict[str, Any] | None = None, **kwargs: Any) -> Detector:
        """Random weights, to run the pipeline without the official files. Every result says so."""
        return cls.from_config(DetectorConfig(untrained=True, roster=tuple(roster), input_size=input_size,
                                              device=device, engine=engine, seed=seed,
                                              engine_options=engine_options or {}, **kwargs))

    @property
    def input_size(self) -> int:
        return self.engine.input_size

    @property
    def finder(self) -> FaceFinder | None:
        """The face finder of the default crop mode (None in frame mode)."""
        return self.finder_for(self.crop)

    def finder_for(self, crop: str | None) -> FaceFinder | None:
        """The face finder for `crop` (None: the default mode): None for frame, built on first use else."""
        crop = self.crop if crop is None else _check_crop(crop)
        if crop == "frame":
            return None
        with self._finder_lock:
            if self._finder is None:
                if self._make_finder is None:
                    raise ConfigError(f"crop={crop!r} needs a face finder")
                self._finder = self._make_finder()
            return self._finder

    def close(self) -> None:
        """Release the face detector's resources (the engine holds none that need closing)."""
        if self._finder is not None:
            self._finder.close()

    # -- public API ------------------------------------------------------------------------------
    def analyze(self, path: str | os.PathLike[str], *, frames: int | None = None, pooling: str | None = None,
                threshold: float | None = None, progress: Progress | None = None,
                kind: MediaKind | None = None, crop: str | None = None) -> AnalysisResult:
        """Analyze one image or video file (type judged by content, unless the caller has probed it
        already and passes its `kind`); `crop` overrides the detector's crop mode for this call.
        Raises a typed MFFMoEError."""
        start = time.perf_counter()
        threshold = self.threshold if threshold is None else threshold
        pool = self.pool if pooling is None else get_pooling(pooling)  # fails before any decoding
        finder = self.finder_for(crop)
        video = False
        try:
            with self._lighter(finder):  # faces are found while the file is opened
                item = open_media(path, self.input_size, frames or self.frames, self.max_image_pixels, kind=kind,
                                  look=self.look(finder))
                if video := isinstance(item, VideoItem):
                    return self.provenanced(path, self.calibrated(
                        self._video(item, pool, threshold, progress, start, finder), crop))
                return self.provenanced(path, self.calibrated(self._image_item(item, threshold, start, finder),
                                                              crop))
        finally:
            self._settle(finder is None and not video)

    def analyze_image(self, image: Image.Image, *, threshold: float | None = None,
                      crop: str | None = None) -> ImageAnalysisResult:
        """Analyze an in-memory PIL image (any mode; converted to RGB as files are)."""
        start = time.perf_counter()
        threshold = self.threshold if threshold is None else threshold
        finder = self.finder_for(crop)
        quality = image_jpeg_quality(image)
        image = to_rgb(image)
        look = self.look(finder)
        try:
            with self._lighter(finder):
                faces = None if look is None else tuple(look(np.asarray(image)))
                item = ImageItem("<image>", preprocess(image, self.input_size), image.width, image.height, 0.0,
                                 faces, jpeg_quality=quality)
                return self.calibrated(self._image_item(item, threshold, start, finder), crop)
        finally:
            self._settle(finder is None)

    def analyze_many(self, paths: Iterable[str | os.PathLike[str]], *, frames: int | None = None,
                     pooling: str | None = None, threshold: float | None = None,
                     on_video_progress: Progress | None = None, workers: int = 2, crop: str | None = None,
                     ) -> Iterator[tuple[str, AnalysisResult | MFFMoEError]]:
        """Analyze many files in input order. Files are decoded ahead on worker threads and images are
        batched together through the engine; a failed file yields its error and the rest go on."""
        threshold = self.threshold if threshold is None else threshold
        pool = self.pool if pooling is None else get_pooling(pooling)
        finder = self.finder_for(crop)
        look = self.look(finder)
        n_frames = frames or self.frames
        engine = self._engine(threshold, finder)
        todo = [str(p) for p in paths]
        pending: list[ImageItem] = []

        def flush() -> Iterator[tuple[str, AnalysisResult | MFFMoEError]]:
            if not pending:
                return
            inputs = [_inputs(it) for it in pending]  # an image's faces (or its frame) share the batch
            counts = [len(ts) for ts in inputs]
            batch = stack([t for ts in inputs for t in ts])
            del inputs
            items = [_without_inputs(it) for it in pending]
            pending.clear()  # the inputs live on in `batch` only, while the engine runs
            experts, share = score_items(engine, batch, self.batch_size)
            del batch
            at = 0
            for it, k in zip(items, counts, strict=True):
                rows, at = experts[at:at + k], at + k
                yield it.path, self.provenanced(it.path, self.calibrated(
                    self._assemble_image(it, rows, it.seconds + share * k, threshold, finder), crop))

        def decode(path: str) -> ImageItem | VideoItem | MFFMoEError:
            try:
                return open_media(path, self.input_size, n_frames, self.max_image_pixels, look=look)
            except MFFMoEError as e:
                return e

        with self._lighter(finder):  # decoding threads look for faces ahead of the engine
            window = lookahead(self.batch_size, engine, faces=finder is not None)
            executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mffmoe-decode")
            futures: list[Future[ImageItem | VideoItem | MFFMoEError] | None] = [
                executor.submit(decode, p) for p in todo[:window]]
            try:
                for i, path in enumerate(todo):
                    if i + window < len(todo):
                        futures.append(executor.submit(decode, todo[i + window]))
                    future = futures[i]
                    assert future is not None
                    item = future.result()
                    futures[i] = None  # free the tensor once consumed
                    if isinstance(item, ImageItem):
                        pending.append(item)
                        if len(pending) >= self.batch_size:
                            yield from flush()
                        continue
                    yield from flush()
                    if isinstance(item, MFFMoEError):
                        yield path, item
                        continue
                    try:
                        result = self._video(item, pool, threshold, on_video_progress, time.perf_counter(), finder)
                        yield path, self.provenanced(path, self.calibrated(result, crop))
                    except MFFMoEError as e:
                        yield path, e
                yield from flush()
            finally:  # left early: stop decoding and close the videos opened ahead
                executor.shutdown(wait=True, cancel_futures=True)
                for f in futures:
                    left = None if f is None or f.cancelled() else f.result()
                    if isinstance(left, VideoItem):
                        left.close()
                self._settle(finder is None)

    def calibrated(self, result: R, crop: str | None = None) -> R:
        """`result` with `calibrated_score` and `calibration` set from the weights' calibration, when it
        fits a call in crop mode `crop` (None: the detector's); `score` is left as it is. Every result
        passes here: a reduced precision's note is added here too."""
        result = self._precision_noted(result)
        cal = self.calibration
        if cal is None and self.calibration_problem is None:
            return result
        mode = self.crop if crop is None else crop
        why = self.calibration_problem
        if why is None and cal is not None:
            if cal.crop != mode:
                why = f"fitted in crop mode {cal.crop}; this call scored in {mode}"
            elif result.experts_run is not None and result.experts_run < len(cal.roster):
                why = "early exit: not every expert ran"
        use = CalibrationUse(applied=why is None, note=why) if cal is None else CalibrationUse(
            name=cal.name, method=cal.method, fusion=cal.fusion, crop=cal.crop, applied=why is None, note=why)
        if why is not None or cal is None:
            return result.model_copy(update={"calibrated_score": None, "calibration": use})
        update: dict[str, Any] = {"calibrated_score": cal.apply_one(result.score, result.expert_scores),
                                  "calibration": use, "faces": _calibrated_faces(cal, result.faces)}
        if isinstance(result, VideoAnalysisResult):
            update["frame_predictions"] = [fp.model_copy(update={
                "calibrated_score": _calibrated_value(cal, fp.score, fp.expert_scores),
                "faces": _calibrated_faces(cal, fp.faces)}) for fp in result.frame_predictions]
            if result.persons is not None:
                update["persons"] = [p.model_copy(update={
                    "calibrated_score": _calibrated_value(cal, p.score, None),
                    "face": _calibrated_face(cal, p.face)}) for p in result.persons]
        return result.model_copy(update=update)

    def provenanced(self, path: str | os.PathLike[str], result: R) -> R:
        """`result` with its file's provenance (`assemble.with_provenance`), unless `read_provenance` is off."""
        return with_provenance(path, result) if self.read_provenance else result

    def _precision_noted(self, result: R) -> R:
        """A reduced-precision result says so, with the difference from fp32 measured for these weights."""
        precision = getattr(self.engine, "precision", "fp32")
        if precision == "fp32":
            return result
        a = getattr(self.engine, "agreement", None) or {}
        why = (f"{precision} (not exact): against fp32 on {a.get('images')} generated images, max |score "
               f"difference| {a.get('max_abs_diff', float('nan')):.1e}, labels agree "
               f"{100 * a.get('label_agreement', float('nan')):.0f}%")
        return with_note(result, why)

    # -- steps -----------------------------------------------------------------------------------
    def _engine(self, threshold: float, finder: FaceFinder | None = None) -> Engine:
        """The engine that scores images at `threshold`: wrapped for early exit when that is on, except for
        images scored by their faces with face pooling `mean`: early exit decides each face on its own,
        which fixes a maximum of the faces' scores but not their mean, so those run every expert."""
        if not self.early_exit or (finder is not None and self.face_pooling == "mean"):
            return self.engine
        return EarlyExitEngine(self.engine, threshold)

    def _image_result(self, experts: np.ndarray, dimensions: dict[str, int], seconds: float,
                      threshold: float) -> ImageAnalysisResult:
        return image_result(experts, dimensions, seconds, threshold=threshold, untrained=self.random_weights,
                            model_name=self.model_name, early_exit=self.early_exit)

    def look(self, finder: FaceFinder | None) -> Callable[[np.ndarray], list[FaceInput]] | None:
        """The faces step for decoded images, as `open_media(look=...)` takes it (None in frame mode)."""
        if finder is None:
            return None
        return lambda rgb: finder.find(rgb, self.input_size)

    def _image_item(self, item: ImageItem, threshold: float, start: float,
                    finder: FaceFinder | None) -> ImageAnalysisResult:
        rows = score_batch(self._engine(threshold, finder), np.stack(_inputs(item)), self.batch_size)
        return self._assemble_image(item, rows, time.perf_counter() - start, threshold, finder)

    def _assemble_image(self, item: ImageItem, rows: np.ndarray, seconds: float, threshold: float,
                        finder: FaceFinder | None) -> ImageAnalysisResult:
        """Faces mode with faces: scored by them; else the frame (flagged out of scope in faces mode).
        Then the scope checks (`trust.judge_scope`)."""
        if item.faces:
            result = face_image_result(item.faces, rows, item.dimensions, seconds, threshold=threshold,
                                       untrained=self.random_weights, model_name=self.model_name,
                                       face_pooling=self.face_pooling, early_exit=self.early_exit)
        else:
            result = self._image_result(rows[0], item.dimensions, seconds, threshold)
            if finder is not None:
                result = out_of_scope(result, item.faces_note or NO_FACE_NOTE)
        return judge_scope(result, self.input_size, item.jpeg_quality)

    def _video(self, item: VideoItem, pool: Pooling, threshold: float, progress: Progress | None,
               start: float, finder: FaceFinder | None) -> VideoAnalysisResult:
        """The video's result, with the scope checks (`trust.judge_scope`)."""
        with self._lighter(None, video=True):  # room for the decoder and the frames in flight
            return judge_scope(self._video_scores(item, pool, threshold, progress, start, finder), self.input_size)

    def _settle(self, full_speed: bool) -> None:
        """The end of every call. After a frame-mode image call (`full_speed`), an engine left lighter by
        faces-mode calls or videos holds every expert again, and the face detector lets go of its compiled
        graphs (about 45 MB; compiled again from the disk cache, 0.1 s a shape, by the next faces-mode call):
        a process that answers every kind of call stays within one memory bound (docs/performance.md,
        "Memory"). After any other call, a resident OpenVINO engine's process gives back what the call
        touched (`engine.memory.release_idle`)."""
        restore = full_speed and getattr(self.engine, "light", False)
        if restore:
            if self._finder is not None:
                self._finder.close()
            self.engine.hold_all()
        if getattr(self.engine, "resident", False) and (restore or not full_speed):
            release_idle()  # after a frame-mode image, the next one touches the same pages again

    def _lighter(self, finder: FaceFinder | None, video: bool = False) -> contextlib.AbstractContextManager[None]:
        """The engine's `lighter()` block for a video or in faces mode (room for the decoder, the frames in
        flight, the face detector), else nothing."""
        lighter = getattr(self.engine, "lighter", None)  # test doubles may have none
        return lighter() if lighter is not None and (video or finder is not None) else contextlib.nullcontext()

    def _video_scores(self, item: VideoItem, pool: Pooling, threshold: float, progress: Progress | None,
                      start: float, finder: FaceFinder | None) -> VideoAnalysisResult:
        """Decoding and preprocessing run on a thread while the engine scores earlier frames."""
        if finder is not None:  # faces mode (early exit decides per video there too)
            return score_video_faces(item, finder, self._engine(threshold), input_size=self.input_size,
                                     batch_size=self.batch_size, pool=pool, threshold=threshold,
                                     untrained=self.random_weights, model_name=self.model_name,
                                     progress=progress, start=start)
        scoring = begin_video(self._engine(threshold), pool, self.batch_size)
        timestamps: dict[int, float] = {}
        failures: dict[int, FrameFailure] = {}
        batch: list[tuple[Frame, np.ndarray]] = []
        reported: tuple[int, int] | None = None

        def report() -> None:
            nonlocal reported
            planned = item.planned  # frames sampled before a correction of the indices do not count
            done = sum(1 for i in planned if i in timestamps or i in failures)
            if progress and (done, len(planned)) != reported:
                reported = (done, len(planned))
                progress(*reported)

        def run_batch() -> None:
            indices, pixels = [f.frame_index for f, _ in batch], np.stack([p for _, p in batch])
            timestamps.update((f.frame_index, f.timestamp) for f, _ in batch)
            batch.clear()  # the frames live on in `pixels` only, while the engine runs
            scoring.add(indices, pixels)
            report()

        step = video_step(len(item.planned), self.batch_size, self.engine)
        with item, decode_ahead(item.frames(), lookahead(self.batch_size, self.engine)) as decoded:
            for frame in decoded:
                if frame.pixels is None:
                    assert frame.error is not None  # a frame without pixels says why
                    failures[frame.frame_index] = FrameFailure(frame_index=frame.frame_index,
                                                               timestamp=frame.timestamp, error=frame.error)
                    continue
                batch.append((frame, frame.pixels))
                if len(batch) >= step:
                    run_batch()
            if batch:
                run_batch()
        summary = item.summary
        report()
        outcome = scoring.finish(summary.indices)  # decided on exactly the final frames
        scored = {i: ScoredFrame(i, timestamps[i], row) for i, row in zip(outcome.frames, outcome.probs, strict=True)}
        return video_result(item.path, summary, scored, failures, time.perf_counter() - start, pooling=pool,
                            threshold=threshold, untrained=self.random_weights, model_name=self.model_name,
                            early_exit=self.early_exit)


def _calibrated_value(cal: Calibration, score: float, experts: Sequence[float] | None) -> float | None:
    """A face's, frame's or person's score through the calibration (None where the learned fusion has no
    expert scores to fuse)."""
    if cal.fusion == "learned" and not experts:
        return None
    return cal.apply_one(score, experts or [])


def _calibrated_face(cal: Calibration, face: FaceResult) -> FaceResult:
    return face.model_copy(update={"calibrated_score": _calibrated_value(cal, face.score, face.expert_scores)})


def _calibrated_faces(cal: Calibration, faces: list[FaceResult] | None) -> list[FaceResult] | None:
    return None if faces is None else [_calibrated_face(cal, f) for f in faces]


def _check_crop(crop: str) -> str:
    if crop not in ("frame", "faces", "auto"):
        raise ConfigError(f"unknown crop mode {crop!r}; choose from frame, faces, auto")
    return crop


def _inputs(item: ImageItem) -> list[np.ndarray]:
    """What the engine scores for an image: its face crops, or its whole frame."""
    return [f.pixels for f in item.faces] if item.faces else [item.pixels]


def _without_inputs(item: ImageItem) -> ImageItem:
    """`item` without its model inputs (3 MB each), once they are stacked into a batch: results need the
    rest (size, faces' boxes and crops), never the inputs again."""
    faces = tuple(dataclasses.replace(f, pixels=NO_INPUT) for f in item.faces) if item.faces else item.faces
    return dataclasses.replace(item, pixels=NO_INPUT, faces=faces)
