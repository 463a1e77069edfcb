"""The entry point: `explain_result(detector, path, result)`, a post-pass over a finished result.

Scoring never changes: the explanation re-decodes what the result scored (the image, its face crops by
their `crop_box`, a video's most suspicious sampled frames by frame number), preprocesses each as the
scoring path did, and asks a method (`gradcam`, `occlusion`) for per-expert maps of the "fake" class.
The experts' maps are combined into one ensemble map (`combine.py`), placed back on the original picture
(`placement.py`) and, with an output folder, drawn as overlay PNGs (`overlay.py`).

A map shows where the evidence that moved the score lies, not proof that a region was manipulated.
"""
from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from mffmoe.engine.base import Engine
from mffmoe.engine.early_exit import EarlyExitEngine
from mffmoe.errors import ConfigError, MediaNotFoundError, MFFMoEError, VideoDecodeError
from mffmoe.explain.base import (
    DEFAULT_EXPLAIN_FRAMES,
    METHODS,
    SMALL_MAP,
    ExpertMap,
    ExplainedItem,
    ExplainOptions,
    Explanation,
    Method,
    MethodChoice,
)
from mffmoe.explain.combine import combine, normalise
from mffmoe.explain.occlusion import Occlusion
from mffmoe.explain.placement import CellGrid, Placement, full_size_map, peak, small_map, upsample
from mffmoe.faces.crops import cut_padded
from mffmoe.inference.assemble import with_note
from mffmoe.media.image import load_image
from mffmoe.media.preprocess import preprocess
from mffmoe.media.video import VideoSampler
from mffmoe.results import AnalysisResult, FaceResult, ImageAnalysisResult, VideoAnalysisResult

if TYPE_CHECKING:
    from mffmoe.inference.detector import Detector
    from mffmoe.model.ensemble import MFFMoE


class Saliency(Protocol):
    """A method: per-expert maps (one [N, h, w] array each, >= 0, at the method's own resolution) and the
    experts' P(fake) [N, E] of the same inputs."""
    name: str

    def maps(self, batch: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]: ...


def saliency_grids(saliency: Saliency, n: int) -> list[CellGrid | None]:
    """Where each expert's cells sit (None: equal cells, centred on their squares)."""
    grids = getattr(saliency, "cell_grids", None)
    return list(grids()) if callable(grids) else [None] * n


@dataclass
class _Input:
    """One model input to explain, and where it came from."""
    kind: str                 # frame | face
    rgb: np.ndarray           # the picture it was cut from (uint8 HWC)
    placement: Placement
    pixels: np.ndarray        # [3, S, S] normalised
    score: float
    face: int | None = None
    frame_index: int | None = None
    timestamp: float | None = None


def scoring_engine(detector: Detector) -> Engine:
    """The detector's engine without the early-exit wrapper (occlusion needs every expert's score)."""
    engine = detector.engine
    while isinstance(engine, EarlyExitEngine):
        engine = engine.engine
    return engine


def torch_model(detector: Detector, channels_last: bool = True) -> MFFMoE:
    """The detector's torch model: the torch engine's own, else the weights loaded once more (an exported
    engine holds only its graphs), or the same seeded random weights for an untrained detector."""
    from mffmoe.engine.weights import WeightsSource
    from mffmoe.model.ensemble import MFFMoE

    engine = scoring_engine(detector)
    model = getattr(engine, "model", None)
    if isinstance(model, MFFMoE):
        return model
    config, info = detector.config, detector.info
    if info.layout == "untrained":
        if config is None or not config.untrained:
            raise ConfigError("an untrained detector built without its configuration has no torch model to "
                              "explain with Grad-CAM; use method='occlusion'")
        from mffmoe.model.checkpoint import untrained_model

        model, _ = untrained_model(config.roster, config.input_size, seed=config.seed)
    else:
        allow = config.allow_missing_ema if config is not None else not info.ema
        model = WeightsSource(info.source, allow_missing_ema=allow).model()
    if channels_last:
        _channels_last_efficientnets(model)
    if tuple(model.roster) != tuple(engine.roster):
        raise ConfigError(f"the torch model's roster {model.roster} is not the engine's {engine.roster}")
    return model


def _channels_last_efficientnets(model: MFFMoE) -> None:
    """As the torch engine lays them out on the CPU: EfficientNets in channels_last run faster there
    (ConvNeXt does not). Only for a model loaded here, never the engine's own."""
    import torch

    for name, expert in zip(model.roster, model.experts, strict=True):
        if "efficientnet" in name:
            expert.to(memory_format=torch.channels_last)


def pick_method(choice: str) -> tuple[Method, str]:
    """The method for `choice` and why: `auto` is Grad-CAM (one pass of the torch model) when captum is
    installed, else occlusion (26 ensemble passes, any engine)."""
    if choice == "gradcam":
        return "gradcam", "asked for"
    if choice == "occlusion":
        return "occlusion", "asked for"
    if choice != "auto":
        raise ConfigError(f"unknown explanation method {choice!r}; choose from {[*METHODS, 'auto']}")
    import importlib.util

    if importlib.util.find_spec("captum") is not None:
        return "gradcam", "auto: Grad-CAM (captum is installed)"
    return "occlusion", "auto: occlusion (captum is not installed, so no Grad-CAM)"


class Explainer:
    """Explains results of one detector with one method; the method's state (the torch model, captum's
    hooks) is built on first use and kept."""

    def __init__(self, detector: Detector, method: MethodChoice = "auto", *, grid: int | None = None,
                 window: int | None = None, features: bool = True) -> None:
        self.detector = detector
        #: Grad-CAM for an exported engine: the feature stages from OpenVINO (False: the torch forward)
        self.features = features
        self.method, self.method_reason = pick_method(method)
        self._occlusion_options = {k: v for k, v in (("grid", grid), ("window", window)) if v is not None}
        self._saliency: Saliency | None = None
        self._lock = threading.Lock()

    def saliency(self) -> Saliency:
        with self._lock:
            if self._saliency is None:
                if self.method == "gradcam":
                    self._saliency = self._gradcam()
                else:
                    self._saliency = Occlusion(scoring_engine(self.detector),
                                               batch_size=max(1, self.detector.batch_size),
                                               **self._occlusion_options)
            return self._saliency

    def _gradcam(self) -> Saliency:
        """Grad-CAM on the torch model; for an exported engine on real weights, on OpenVINO graphs of the
        experts' feature stages (about one OpenVINO pass instead of one torch pass; `features.py`)."""
        from mffmoe.engine.scheduler import plan_threads
        from mffmoe.explain.gradcam import GradCAM

        engine = scoring_engine(self.detector)
        exported = getattr(engine, "model", None) is None
        if not (exported and self.detector.info.files and self.features):
            return GradCAM(torch_model(self.detector))
        from mffmoe.explain.features import FeatureGraphs

        model = torch_model(self.detector, channels_last=False)  # only its heads run: pages stay on disk
        _, threads = plan_threads(len(model.roster))
        resident = bool(getattr(engine, "resident", True))  # as the engine: a one-shot job holds one at a time
        return GradCAM(model, features=FeatureGraphs(model, self.detector.info, threads, resident=resident))

    def explain(self, path: str | os.PathLike[str], result: ImageAnalysisResult | VideoAnalysisResult, *,
                frames: int = DEFAULT_EXPLAIN_FRAMES, experts: bool = False,
                out_dir: str | os.PathLike[str] | None = None) -> Explanation:
        """Maps for `result` (a result of `detector.analyze(path)`): the image, or each face it scored;
        a video's `frames` most suspicious sampled frames (or their faces). Overlays go to `out_dir`."""
        start = time.perf_counter()
        if frames < 1:
            raise ConfigError(f"frames to explain must be at least 1, got {frames}")
        if not Path(path).is_file():
            raise MediaNotFoundError(f"{path}: no such file")
        out = _output_dir(out_dir)
        if isinstance(result, ImageAnalysisResult):
            inputs = self._image_inputs(path, result)
            media_type = "image"
        elif isinstance(result, VideoAnalysisResult):
            inputs = self._video_inputs(path, result, frames)
            media_type = "video"
        else:
            raise ConfigError(f"cannot explain a {type(result).__name__}: expected an image or video result")
        roster = list(scoring_engine(self.detector).roster)
        items: list[ExplainedItem] = []
        if inputs:
            maps, probs = self.saliency().maps(np.stack([it.pixels for it in inputs]))
            size = self.detector.input_size
            grids = saliency_grids(self.saliency(), len(maps))
            for k, it in enumerate(inputs):
                per_expert = np.stack([upsample(m[k], size, g) for m, g in zip(maps, grids, strict=True)])
                items.append(self._item(it, per_expert, probs[k], roster, experts, out, Path(path), media_type))
        height, width = (inputs[0].rgb.shape[:2] if inputs else (0, 0))
        if isinstance(result, ImageAnalysisResult):
            width, height = result.dimensions["width"], result.dimensions["height"]
        return Explanation(path=str(path), media_type=media_type, width=width, height=height,  # type: ignore[arg-type]
                           method=self.method, method_reason=self.method_reason, roster=roster, items=items,
                           seconds=time.perf_counter() - start)

    # -- inputs ----------------------------------------------------------------------------------
    def _image_inputs(self, path: str | os.PathLike[str], result: ImageAnalysisResult) -> list[_Input]:
        rgb = np.asarray(load_image(path, self.detector.max_image_pixels))
        want = (result.dimensions.get("width"), result.dimensions.get("height"))
        if want != (rgb.shape[1], rgb.shape[0]):
            raise ConfigError(f"{path} is {rgb.shape[1]}x{rgb.shape[0]}, but the result is of a "
                              f"{want[0]}x{want[1]} image: not this file's result")
        if result.faces:
            return self._face_inputs(rgb, result.faces)
        return [self._frame_input(rgb, result.score)]

    def _video_inputs(self, path: str | os.PathLike[str], result: VideoAnalysisResult, k: int) -> list[_Input]:
        ranked = sorted(result.frame_predictions, key=lambda fp: (-fp.score, fp.frame_index))[:k]
        wanted = {fp.frame_index: fp for fp in ranked}
        if not wanted:
            return []
        decoded: dict[int, np.ndarray] = {}
        with VideoSampler(path, len(wanted)) as sampler:
            sampler.indices = sorted(wanted)
            for sample in sampler:
                if sample.frame_index in wanted and sample.image is not None:
                    decoded[sample.frame_index] = sample.image
        missing = sorted(set(wanted) - set(decoded))
        if missing:
            raise VideoDecodeError(f"{path}: frame(s) {missing} of the result could not be decoded again")
        inputs: list[_Input] = []
        for fp in sorted(ranked, key=lambda f: f.frame_index):
            rgb = decoded[fp.frame_index]
            found = self._face_inputs(rgb, fp.faces) if fp.faces else [self._frame_input(rgb, fp.score)]
            for it in found:
                it.frame_index, it.timestamp = fp.frame_index, fp.timestamp
            inputs.extend(found)
        return inputs

    def _frame_input(self, rgb: np.ndarray, score: float) -> _Input:
        h, w = rgb.shape[:2]
        return _Input("frame", rgb, Placement.frame(w, h), preprocess(rgb, self.detector.input_size), score)

    def _face_inputs(self, rgb: np.ndarray, faces: Sequence[FaceResult]) -> list[_Input]:
        """The crops as the faces path cut them: the `crop_box` square, black where it leaves the frame.
        Aligned (rotated) crops are refused: their angle is not in the result."""
        finder = self.detector.finder_for("faces") if self.detector.crop != "frame" else None
        if finder is not None and finder.align:
            raise ConfigError("explaining aligned (rotated) face crops is not supported yet: the result does "
                              "not record their angle")
        h, w = rgb.shape[:2]
        out = []
        for i, face in enumerate(faces):
            box = tuple(int(v) for v in face.crop_box)
            placement = Placement.crop(box, w, h)
            pixels = preprocess(cut_padded(rgb, placement.box), self.detector.input_size)
            out.append(_Input("face", rgb, placement, pixels, face.score, face=i))
        return out

    # -- items -----------------------------------------------------------------------------------
    def _item(self, it: _Input, maps: np.ndarray, probs: np.ndarray, roster: list[str], experts: bool,
              out: Path | None, path: Path, media_type: str) -> ExplainedItem:
        ensemble, weights = combine(list(maps), list(probs))
        where = peak(ensemble, it.placement)
        expert_maps = None
        if experts:
            expert_maps = [ExpertMap(expert=name, score=float(p), weight=float(wt),
                                     map=_rounded(small_map(normalise(m), SMALL_MAP)))
                           for name, p, wt, m in zip(roster, probs, weights, maps, strict=True)]
        overlay = None
        if out is not None:
            overlay = str(self._overlay(it, ensemble, where, out, path, media_type))
        return ExplainedItem(kind=it.kind, face=it.face, frame_index=it.frame_index,  # type: ignore[arg-type]
                             timestamp=it.timestamp, method=self.method, score=float(it.score),
                             box=list(it.placement.box), map=_rounded(small_map(ensemble, SMALL_MAP)),
                             peak=None if where is None else list(where),
                             weights=[round(float(x), 6) for x in weights], experts=expert_maps,
                             overlay=overlay)

    def _overlay(self, it: _Input, ensemble: np.ndarray, where: tuple[int, int] | None, out: Path, path: Path,
                 media_type: str) -> Path:
        from mffmoe.explain.overlay import render, write_png
        from mffmoe.results import label

        parts = [path.stem, it.kind]
        if media_type == "video":
            parts.append(str(it.frame_index))
        if it.kind == "face":
            parts.append(str(it.face))
        name = ".".join(parts) + ".png"
        what = ([] if it.face is None else [f"face {it.face}"]) + \
            ([] if it.frame_index is None else [f"frame {it.frame_index}"])
        verdict = label(it.score, self.detector.threshold)
        title = f"P(fake) {it.score:.3f} {verdict} | {self.method} | {', '.join(what) or 'frame'}"
        box = None if it.kind == "frame" else it.placement.box
        picture = render(it.rgb, full_size_map(ensemble, it.placement), title=title, box=box, peak=where)
        try:
            return write_png(picture, out / name)
        except OSError as e:
            raise ConfigError(f"cannot write the overlay {out / name}: {e}") from e


def _rounded(values: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 4) for v in row] for row in np.clip(values, 0.0, 1.0)]


def check_options(options: ExplainOptions) -> ExplainOptions:
    """Before any model loads: the overlay folder can be written (made if missing) and the method can run
    here (Grad-CAM needs captum). Raises a typed error."""
    method, _ = pick_method(options.method)
    if method == "gradcam":
        import importlib.util

        if importlib.util.find_spec("captum") is None:
            from mffmoe.errors import MissingExtraError

            raise MissingExtraError("Grad-CAM explanations need captum (pip install 'mffmoe[explain]'); "
                                    "or use --explain-method occlusion")
    _output_dir(options.out_dir)
    return options


def _output_dir(out_dir: str | os.PathLike[str] | None) -> Path | None:
    """The overlay folder, made if missing; a typed error (before any work) when it cannot be."""
    if out_dir is None:
        return None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--explain-dir {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot make the overlay folder {out}: {e}") from e
    if not os.access(out, os.W_OK):
        raise ConfigError(f"the overlay folder {out} is not writable")
    return out


_EXPLAINERS: weakref.WeakKeyDictionary[Detector, dict[tuple[str, int | None, int | None], Explainer]] = \
    weakref.WeakKeyDictionary()
_EXPLAINERS_LOCK = threading.Lock()


def explain_result(detector: Detector, path: str | os.PathLike[str],
                   result: ImageAnalysisResult | VideoAnalysisResult, *, method: MethodChoice = "auto",
                   frames: int = DEFAULT_EXPLAIN_FRAMES, experts: bool = False,
                   out_dir: str | os.PathLike[str] | None = None, grid: int | None = None,
                   window: int | None = None) -> Explanation:
    """Explain `result` of `detector.analyze(path)`; the explainer (and the torch model Grad-CAM needs)
    is kept per detector and method, so later calls do not load it again."""
    key = (method, grid, window)
    with _EXPLAINERS_LOCK:
        per = _EXPLAINERS.setdefault(detector, {})
        explainer = per.get(key)
        if explainer is None:
            explainer = per[key] = Explainer(detector, method, grid=grid, window=window)
    return explainer.explain(path, result, frames=frames, experts=experts, out_dir=out_dir)


def explained(detector: Detector, path: str | os.PathLike[str], result: AnalysisResult,
              options: ExplainOptions) -> AnalysisResult:
    """`result` with its `explanation` (`--explain`). The score stands whatever happens here: a typed
    error of the explanation (a frame that no longer decodes, an aligned crop) goes into the result's
    note instead, so one file's explanation never costs its result."""
    try:
        explanation = explain_result(detector, path, result, method=options.method, frames=options.frames,
                                     experts=options.experts, out_dir=options.out_dir)
    except MFFMoEError as e:
        return with_note(result, f"no explanation: {e}")
    return result.model_copy(update={"explanation": explanation})
