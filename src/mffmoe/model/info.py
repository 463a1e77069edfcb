"""What a checkpoint is, read without torch: its layout, files, roster, input size and recorded training
settings (`read_info`), and the fingerprint caches are keyed by.

Kept free of torch and timm on purpose: a process that runs exported graphs (OpenVINO) identifies its
weights and finds their cached graphs with this module alone, and never imports torch (`import torch` of
the CUDA build costs about 700 MB and seconds). Loading tensors is `checkpoint.py`'s.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mffmoe._util.fs import atomic_write
from mffmoe.config import DEFAULT_INPUT_SIZE, DEFAULT_ROSTER
from mffmoe.errors import CheckpointFormatError, MissingEMAError, WeightsError, WeightsNotFoundError

MANIFEST = "mffmoe.json"
SAFETENSORS_FORMAT = "mffmoe-folded-ema-v1"


@dataclass(frozen=True)
class Layout:
    """One on-disk layout: file names and whether the weight keys carry the `experts.` prefix."""

    name: str
    weights: str
    ema: str
    prefixed: bool


#: Registry of the official layouts, in lookup order.
LAYOUTS: tuple[Layout, ...] = (
    Layout("official", "MFF-MoE-v1.pth", "MFF-MoE-v1.state", prefixed=True),
    Layout("upstream", "weight.pth", "ema.state", prefixed=False),
)
IGNORED_PREFIXES = ("ema_list", "ema_state")


@dataclass
class CheckpointInfo:
    """What was loaded, for `mffmoe info`, results and caches."""

    source: str
    layout: str
    roster: tuple[str, ...]
    input_size: int
    ema: bool
    files: dict[str, str] = field(default_factory=dict)  # role -> path
    ema_num_updates: list[int | None] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """A cheap identity of the source files (name, size, mtime), for caches keyed by weights."""
        h = hashlib.sha256()
        for role, path in sorted(self.files.items()):
            st = os.stat(path)
            h.update(f"{role}:{os.path.basename(path)}:{st.st_size}:{st.st_mtime_ns};".encode())
        h.update(json.dumps([self.roster, self.input_size, self.ema]).encode())
        return h.hexdigest()[:16]


#: Bounds on what checkpoint metadata may ask for, checked before anything is built: the spec's input size
#: is 512 and its roster has seven experts; beyond these a file is hostile or broken, not a model.
INPUT_SIZE_RANGE = (32, 2048)
MAX_EXPERTS = 32


def validate_metadata(roster: Any, input_size: Any, where: str, check_names: bool = True,
                      ) -> tuple[tuple[str, ...], int]:
    """A roster (a list of known timm model names) and an input size (an int in INPUT_SIZE_RANGE) as a
    checkpoint states them, checked; anything else is a CheckpointFormatError naming the fault.
    `check_names=False` skips asking timm (which imports torch) whether the names exist: for callers that
    only look up graphs built, and checked, from these weights before (`engine.prepared`)."""
    lo, hi = INPUT_SIZE_RANGE
    if isinstance(input_size, bool) or not isinstance(input_size, int) or not lo <= input_size <= hi:
        raise CheckpointFormatError(f"{where}: input_size must be an integer from {lo} to {hi}, got {input_size!r}")
    if not isinstance(roster, list) or not all(isinstance(n, str) for n in roster):
        raise CheckpointFormatError(f"{where}: roster must be a list of timm model names, got "
                                    f"{_short(roster)}")
    if not 1 <= len(roster) <= MAX_EXPERTS:
        raise CheckpointFormatError(f"{where}: roster must list 1 to {MAX_EXPERTS} experts, got {len(roster)}")
    unknown = [n for n in roster if check_names and not _timm_knows(n)]
    if unknown:
        raise CheckpointFormatError(f"{where}: roster names unknown timm model(s): {', '.join(map(repr, unknown))}")
    return tuple(roster), input_size


def _timm_knows(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= limit else text[:limit] + '...'}"


def count_experts(keys: Iterable[str], roster: Sequence[str], source: str) -> None:
    """Refuse a roster whose length differs from the number of experts the weights hold (`experts.N.`
    key prefixes), before any model is built for it."""
    held = sorted({int(m.group(1)) for k in keys if (m := re.match(r"experts\.(\d+)\.", k))})
    if len(held) != len(roster):
        shown = held if len(held) <= 12 else [*held[:12], "..."]
        raise CheckpointFormatError(f"{source} holds {len(held)} expert(s) (indices {shown}), but the roster "
                                    f"lists {len(roster)}: {_short(list(roster))}")


def read_manifest(directory: Path, check_names: bool = True) -> tuple[tuple[str, ...], int]:
    """Roster and input size from `mffmoe.json`, else the spec's defaults; validated."""
    path = directory / MANIFEST
    if not path.exists():
        return DEFAULT_ROSTER, DEFAULT_INPUT_SIZE
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise CheckpointFormatError(f"{path}: not a valid manifest (not JSON: {e})") from e
    if not isinstance(data, dict):
        raise CheckpointFormatError(f"{path}: not a valid manifest (expected a JSON object, got {_short(data)})")
    return validate_metadata(data.get("roster", list(DEFAULT_ROSTER)), data.get("input_size", DEFAULT_INPUT_SIZE),
                             str(path), check_names)


def _recorded(info: CheckpointInfo) -> tuple[dict[str, Any], str]:
    """What the weights record of their training (a folder's `mffmoe.json`; a .safetensors file's
    metadata, where `face_options` is JSON) and where, for messages. Unreadable manifests record nothing
    here (`read_manifest` reports them when the weights load)."""
    if info.layout == "safetensors":
        data: dict[str, Any] = {k: v for k, v in info.metadata.items() if k == "crop"}
        with contextlib.suppress(ValueError, TypeError):
            options = json.loads(info.metadata.get("face_options") or "{}")
            if isinstance(options, dict):
                data.update(options)
        return data, info.source
    path = Path(info.source) / MANIFEST
    if path.is_file():
        with contextlib.suppress(ValueError, OSError):
            manifest = json.loads(path.read_text())
            if isinstance(manifest, dict):
                return manifest, str(path)
    return {}, str(path)


def trained_crop(info: CheckpointInfo) -> str:
    """The crop mode the weights were trained on, the default for inference with them: the one their
    manifest (or safetensors metadata) records, else `auto` (the official weights were trained on faces)."""
    crop = _recorded(info)[0].get("crop")
    if crop is None:
        return "auto"
    if crop not in ("frame", "faces", "auto"):
        raise CheckpointFormatError(f"{info.source}: unknown crop mode {_short(crop)} in its metadata")
    return str(crop)


#: The face-crop settings a trained checkpoint's manifest may record, by their DetectorConfig names, with
#: the check each value must pass (`trained_face_options`).
FACE_OPTIONS: dict[str, Callable[[Any], bool]] = {
    "face_margin": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 1.0 <= v <= 3.0,
    "align": lambda v: isinstance(v, bool),
    "min_face": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 8,
}


def trained_face_options(info: CheckpointInfo) -> dict[str, Any]:
    """The face-crop settings (`face_margin`, `align`, `min_face`; DetectorConfig's names) the weights were
    trained with, as their manifest (or a converted file's metadata) records them (`mffmoe train --crop
    faces|auto` writes them): the defaults for inference with them. Empty for weights without them
    (official files, frame-trained runs); an invalid value is a CheckpointFormatError."""
    data, where = _recorded(info)
    out = {}
    for key, ok in FACE_OPTIONS.items():
        if key in data:
            if not ok(data[key]):
                raise CheckpointFormatError(f"{where}: invalid {key} {_short(data[key])}")
            out[key] = data[key]
    return out


def trained_settings(info: CheckpointInfo) -> dict[str, Any]:
    """What the weights were trained with, as DetectorConfig fields: `crop` (`trained_crop`) and the face
    settings their manifest records (`trained_face_options`). `DetectorConfig.with_trained` takes it."""
    return {"crop": trained_crop(info), **trained_face_options(info)}


def write_manifest(directory: Path, roster: Sequence[str], input_size: int, **extra: Any) -> None:
    """`mffmoe.json`: roster, input size, and what else the writer records (training: `crop`, the face
    settings of FACE_OPTIONS when it trained on faces, `trained`)."""
    data = {"roster": list(roster), "input_size": int(input_size), **extra}
    with atomic_write(directory / MANIFEST, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")


def find_layout(directory: Path) -> Layout | None:
    for layout in LAYOUTS:
        if (directory / layout.weights).exists():
            return layout
    return None


def _locate(path: str | os.PathLike[str]) -> tuple[Path, Layout | None]:
    """(a .safetensors file, None) or (a directory, its official layout); else a clear error."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return path, None
    if not path.exists():
        raise WeightsNotFoundError(_where_to_put(path))
    if path.is_file():
        raise WeightsError(f"{path}: expected a weights directory or a .safetensors file")
    layout = find_layout(path)
    if layout is None:
        converted = sorted(path.glob("*.safetensors"))
        if len(converted) == 1:
            return converted[0], None
        raise WeightsNotFoundError(_where_to_put(path))
    return path, layout


def _where_to_put(path: Path) -> str:
    names = " or ".join(f"{lay.weights} + {lay.ema}" for lay in LAYOUTS)
    return (f"no MFF-MoE weights found at {path}. Put the official files ({names}) in a directory and pass "
            f"it with --weights DIR, set MFFMOE_WEIGHTS=DIR, or place them in ./models/MFF-MoE-V1/. "
            f"A file made by `mffmoe convert` can be passed directly. Without weights, "
            f"`mffmoe analyze --untrained` tries the pipeline with random weights.")


_MISSING_EMA = ("{ema} is missing. MFF-MoE runs on its EMA weights, which live in that file; the raw weights in "
                "{weights} alone give different (worse) scores. Add the file, or pass --allow-missing-ema "
                "(allow_missing_ema=True) to run on the raw weights deliberately.")


def _safetensors_meta(path: Path, f: Any, check_names: bool = True) -> tuple[dict[str, str], tuple[str, ...], int]:
    """An open safetensors file's mffmoe metadata: (all of it, roster, input size), validated."""
    meta = f.metadata() or {}
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise CheckpointFormatError(f"{path}: not an mffmoe file (metadata format {meta.get('format')!r}, "
                                    f"expected {SAFETENSORS_FORMAT!r})")
    roster = _json_field(meta, "roster", path)
    raw_size = meta.get("input_size")
    input_size = int(raw_size) if isinstance(raw_size, str) and re.fullmatch(r"[0-9]{1,9}", raw_size) else raw_size
    roster, input_size = validate_metadata(roster, input_size, f"{path} metadata", check_names)
    count_experts(f.keys(), roster, str(path))
    return meta, roster, input_size


def _json_field(meta: Mapping[str, str], key: str, path: Path, default: str | None = None) -> Any:
    raw = meta.get(key, default)
    if raw is None:
        raise CheckpointFormatError(f"{path}: metadata has no {key!r}")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise CheckpointFormatError(f"{path}: metadata {key!r} is not JSON ({e}): {raw[:80]!r}") from e


def _safetensors_info(path: Path, meta: Mapping[str, str], roster: tuple[str, ...], input_size: int,
                      ) -> CheckpointInfo:
    ema = _json_field(meta, "ema_folded", path, "true")
    updates = _json_field(meta, "ema_num_updates", path, "[]")
    if not isinstance(ema, bool):
        raise CheckpointFormatError(f"{path}: metadata 'ema_folded' must be true or false, got {_short(ema)}")
    if not isinstance(updates, list) or not all(u is None or (isinstance(u, int) and not isinstance(u, bool))
                                                for u in updates):
        raise CheckpointFormatError(f"{path}: metadata 'ema_num_updates' must be a list of integers or null, "
                                    f"got {_short(updates)}")
    return CheckpointInfo(source=str(path), layout="safetensors", roster=roster, input_size=input_size,
                          ema=ema, files={"safetensors": str(path)}, ema_num_updates=updates, metadata=dict(meta))


def read_safetensors_info(path: Path, check_names: bool = True) -> CheckpointInfo:
    """A converted file's CheckpointInfo from its header (numpy framework: no torch, no tensor read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta, roster, input_size = _safetensors_meta(path, f, check_names)
            return _safetensors_info(path, meta, roster, input_size)
    except SafetensorError as e:
        raise CheckpointFormatError(f"{path}: not a readable safetensors file ({e})") from e
    except (KeyError, ValueError) as e:
        raise CheckpointFormatError(f"{path}: bad mffmoe metadata ({e})") from e


def read_info(path: str | os.PathLike[str], allow_missing_ema: bool = False, check_names: bool = True,
              ) -> CheckpointInfo:
    """What `load_weights` reports about these weights, from metadata only (file names, the manifest, the
    safetensors header; no tensor is read): for callers that need the identity of the weights without a
    model, such as the Ray scan driver. The tensors are checked when the weights are loaded."""
    where, layout = _locate(path)
    if layout is None:
        return read_safetensors_info(where, check_names)
    roster, input_size = read_manifest(where, check_names)
    weights_path, ema_path = where / layout.weights, where / layout.ema
    if not ema_path.exists() and not allow_missing_ema:
        raise MissingEMAError(_MISSING_EMA.format(ema=ema_path, weights=weights_path.name, dir=where))
    files = {"weights": str(weights_path), **({"ema": str(ema_path)} if ema_path.exists() else {})}
    return CheckpointInfo(source=str(where), layout=layout.name, roster=roster, input_size=input_size,
                          ema=ema_path.exists(), files=files)
