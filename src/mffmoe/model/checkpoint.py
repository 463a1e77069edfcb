"""Checkpoint formats: the two official layouts users hold, and our converted safetensors file.

Loading is strict (keys, shapes, EMA list lengths), pickle-free (`weights_only=True`), and lean: the
model is built on the meta device and the tensors of the files are assigned into it (memory-mapped
where the format allows), so no second full copy of the weights is ever resident. The EMA shadow
parameters are folded in here, once; inference never swaps parameters.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mffmoe._util.fs import atomic_path, atomic_write
from mffmoe.config import DEFAULT_INPUT_SIZE, DEFAULT_ROSTER
from mffmoe.errors import (
    CheckpointFormatError,
    MissingEMAError,
    UnsafeCheckpointError,
    WeightsError,
    WeightsNotFoundError,
)
from mffmoe.model.ema import ExponentialMovingAverage, validate_ema_state
from mffmoe.model.ensemble import MFFMoE, build_model

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


def validate_metadata(roster: Any, input_size: Any, where: str) -> tuple[tuple[str, ...], int]:
    """A roster (a list of known timm model names) and an input size (an int in INPUT_SIZE_RANGE) as a
    checkpoint states them, checked; anything else is a CheckpointFormatError naming the fault."""
    import timm

    lo, hi = INPUT_SIZE_RANGE
    if isinstance(input_size, bool) or not isinstance(input_size, int) or not lo <= input_size <= hi:
        raise CheckpointFormatError(f"{where}: input_size must be an integer from {lo} to {hi}, got {input_size!r}")
    if not isinstance(roster, list) or not all(isinstance(n, str) for n in roster):
        raise CheckpointFormatError(f"{where}: roster must be a list of timm model names, got "
                                    f"{_short(roster)}")
    if not 1 <= len(roster) <= MAX_EXPERTS:
        raise CheckpointFormatError(f"{where}: roster must list 1 to {MAX_EXPERTS} experts, got {len(roster)}")
    unknown = [n for n in roster if not timm.is_model(n)]
    if unknown:
        raise CheckpointFormatError(f"{where}: roster names unknown timm model(s): {', '.join(map(repr, unknown))}")
    return tuple(roster), input_size


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


def read_manifest(directory: Path) -> tuple[tuple[str, ...], int]:
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
                             str(path))


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


def safe_torch_load(path: str | os.PathLike[str]) -> Any:
    """`torch.load(weights_only=True)`, memory-mapped when the file allows; typed errors otherwise."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) files cannot be mapped: read them instead
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if not re.search(r"GLOBAL|[Uu]nsupported (global|class)|REDUCE|BUILD", text):
            raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({_why(text)})") from e
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the file needs arbitrary Python code to unpickle ({_why(text)}), which "
            f"is how malicious checkpoints execute code. Only plain tensor checkpoints are accepted.") from e
    except FileNotFoundError as e:
        raise WeightsNotFoundError(f"{path}: no such file") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({e})") from e


def _why(text: str) -> str:
    """The informative line of torch's long weights_only error message."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if re.search(r"GLOBAL|Unsupported|invalid load key", ln)]
    return (useful or lines or ["unknown error"])[0][:300]


def _preview(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _normalize_keys(state: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """Drop EMA bookkeeping keys and give every key the `experts.` prefix (judged by content)."""
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(f"{path}: expected a state dict, got {type(state).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointFormatError(f"{path}: non-string key {key!r} in state dict")
        if key.startswith(IGNORED_PREFIXES):
            continue
        if re.match(r"^\d+\.", key):
            key = "experts." + key
        if not isinstance(value, torch.Tensor):
            raise CheckpointFormatError(f"{path}: value of {key!r} is {type(value).__name__}, not a tensor")
        out[key] = value
    return out


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict key and shape check that names every offending key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
    bad_shapes = [f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in sorted(expected.keys() & state.keys())
                  if tuple(state[k].shape) != expected[k]]
    if bad_shapes:
        problems.append(f"{len(bad_shapes)} shape mismatch(es): {_preview(bad_shapes)}")
    if problems:
        roster = getattr(model, "roster", None)
        raise CheckpointFormatError(f"{source} does not match the roster {list(roster) if roster else ''}: "
                                    + "; ".join(problems))


def _assign(model: MFFMoE, state: dict[str, torch.Tensor]) -> MFFMoE:
    for key, value in state.items():
        if value.is_floating_point() and value.dtype != torch.float32:
            state[key] = value.float()
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    return model


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


def load_weights(path: str | os.PathLike[str], allow_missing_ema: bool = False) -> tuple[MFFMoE, CheckpointInfo]:
    """Load a weights directory (either official layout) or a converted `.safetensors` file."""
    where, layout = _locate(path)
    if layout is None:
        return load_safetensors(where)
    return load_official(where, layout, allow_missing_ema=allow_missing_ema)


def _where_to_put(path: Path) -> str:
    names = " or ".join(f"{lay.weights} + {lay.ema}" for lay in LAYOUTS)
    return (f"no MFF-MoE weights found at {path}. Put the official files ({names}) in a directory and pass "
            f"it with --weights DIR, set MFFMOE_WEIGHTS=DIR, or place them in ./models/MFF-MoE-V1/. "
            f"A file made by `mffmoe convert` can be passed directly. Without weights, "
            f"`mffmoe analyze --untrained` tries the pipeline with random weights.")


def _ema_entries(ema_state: Any, n_experts: int, path: Path) -> list[Any]:
    if not isinstance(ema_state, Mapping):
        raise CheckpointFormatError(f"{path}: expected a dict of per-expert EMA states, got "
                                    f"{type(ema_state).__name__}")
    by_index: dict[int, Any] = {}
    for key, value in ema_state.items():
        try:
            by_index[int(key)] = value
        except (TypeError, ValueError):
            raise CheckpointFormatError(f"{path}: unexpected EMA key {key!r} (expected expert indices)") from None
    missing = [i for i in range(n_experts) if i not in by_index]
    extra = sorted(k for k in by_index if not 0 <= k < n_experts)
    if missing or extra:
        raise CheckpointFormatError(f"{path}: EMA entries must be exactly experts 0..{n_experts - 1}; "
                                    f"missing {missing}, unexpected {extra}")
    return [by_index[i] for i in range(n_experts)]


def _read_official(directory: Path, layout: Layout, missing_ema: str | None,
                   ) -> tuple[MFFMoE, dict[str, torch.Tensor], list[dict[str, Any]] | None, CheckpointInfo]:
    """Model skeleton (meta), raw state dict and validated per-expert EMA states (None without the
    `.state` file: allowed only when `missing_ema` is None, else that text is the error)."""
    roster, input_size = read_manifest(directory)
    weights_path, ema_path = directory / layout.weights, directory / layout.ema
    if not ema_path.exists() and missing_ema is not None:
        raise MissingEMAError(missing_ema.format(ema=ema_path, weights=weights_path.name, dir=directory))
    state = _normalize_keys(safe_torch_load(weights_path), weights_path)
    count_experts(state, roster, str(weights_path))
    model = build_model(roster, input_size, device="meta")
    check_state_dict(model, state, str(weights_path))
    emas: list[dict[str, Any]] | None = None
    if ema_path.exists():
        entries = _ema_entries(safe_torch_load(ema_path), len(roster), ema_path)
        try:
            emas = [validate_ema_state(entry, [tuple(p.shape) for p in expert.parameters()],
                                       where=f"{ema_path} expert {i} ({roster[i]})")
                    for i, (expert, entry) in enumerate(zip(model.experts, entries, strict=True))]
        except ValueError as e:
            raise CheckpointFormatError(str(e)) from e
    files = {"weights": str(weights_path), **({"ema": str(ema_path)} if emas is not None else {})}
    info = CheckpointInfo(source=str(directory), layout=layout.name, roster=roster, input_size=input_size,
                          ema=emas is not None, files=files,
                          ema_num_updates=[e["num_updates"] for e in emas or []])
    return model, state, emas, info


_MISSING_EMA = ("{ema} is missing. MFF-MoE runs on its EMA weights, which live in that file; the raw weights in "
                "{weights} alone give different (worse) scores. Add the file, or pass --allow-missing-ema "
                "(allow_missing_ema=True) to run on the raw weights deliberately.")


def load_official(directory: Path, layout: Layout, allow_missing_ema: bool = False) -> tuple[MFFMoE, CheckpointInfo]:
    """Inference weights: each EMA shadow replaces its raw parameter (folded once, here)."""
    model, state, emas, info = _read_official(directory, layout, None if allow_missing_ema else _MISSING_EMA)
    for i, (expert, ema) in enumerate(zip(model.experts, emas, strict=True) if emas is not None else ()):
        for (name, _), shadow in zip(expert.named_parameters(), ema["shadow_params"], strict=True):
            state[f"experts.{i}.{name}"] = shadow  # fold: the shadow replaces the raw parameter
    del emas
    _assign(model, state)
    return model, info


def load_unfolded(path: str | os.PathLike[str], allow_missing_ema: bool = False,
                  ) -> tuple[MFFMoE, list[dict[str, Any]] | None, CheckpointInfo]:
    """For training (`--init`, resume): the RAW parameters and, apart, each expert's validated EMA state
    (None without a `.state`). A `.safetensors` file holds folded weights only: they become the raw
    parameters and the EMA states are None. Same strict checks as `load_weights`."""
    where, layout = _locate(path)
    if layout is None:
        model, info = load_safetensors(where)
        return model, None, info
    missing = None if allow_missing_ema else (
        "{ema} is missing: training from {dir} would restart the EMA from the raw weights. Add the file, "
        "or allow it explicitly (--allow-missing-ema).")
    model, state, emas, info = _read_official(where, layout, missing)
    _assign(model, state)
    return model, emas, info


# --- safetensors ---------------------------------------------------------------------------------
def save_safetensors(model: MFFMoE, info: CheckpointInfo, out: str | os.PathLike[str],
                     hashes: Mapping[str, str] | None = None) -> Path:
    """Write the (already EMA-folded) model as one pickle-free file with its metadata."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        out = out / "mffmoe.safetensors" if out.is_dir() or not out.suffix else out.with_suffix(".safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": SAFETENSORS_FORMAT,
        "roster": json.dumps(list(info.roster)),
        "input_size": str(info.input_size),
        "ema_folded": json.dumps(info.ema),
        "source_layout": info.layout,
        "source_files": json.dumps({Path(p).name: (hashes or {}).get(role, "") for role, p in info.files.items()}),
        "ema_num_updates": json.dumps(info.ema_num_updates),
    }
    recorded = _recorded(info)[0]  # what training recorded stays with the weights
    if "crop" in recorded:
        metadata["crop"] = trained_crop(info)
    if options := trained_face_options(info):
        metadata["face_options"] = json.dumps(options)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return out


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _mmap_safetensors(path: Path, keys: list[str]) -> dict[str, torch.Tensor]:
    """Tensors as views of one private memory map of the file (nothing copied, pages read on first use),
    like `torch.load(mmap=True)` gives for the official files; `safe_open(...).get_tensor` copies."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    size = path.stat().st_size
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    base = 8 + n
    out = {}
    for key in keys:
        entry = header[key]
        dtype = _ST_DTYPES[entry["dtype"]]
        start, end = (base + int(o) for o in entry["data_offsets"])
        if not base <= start <= end <= size:
            raise ValueError(f"tensor {key!r} lies outside the file")
        view = storage[start:end]
        # torch's stubs lack set_'s (source, offset, size) form, which takes contiguous strides
        out[key] = torch.empty(0, dtype=dtype).set_(view, 0, tuple(entry["shape"]))  # type: ignore[call-overload]
    return out


def _safetensors_meta(path: Path, f: Any) -> tuple[dict[str, str], tuple[str, ...], int]:
    """An open safetensors file's mffmoe metadata: (all of it, roster, input size), validated."""
    meta = f.metadata() or {}
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise CheckpointFormatError(f"{path}: not an mffmoe file (metadata format {meta.get('format')!r}, "
                                    f"expected {SAFETENSORS_FORMAT!r})")
    roster = _json_field(meta, "roster", path)
    raw_size = meta.get("input_size")
    input_size = int(raw_size) if isinstance(raw_size, str) and re.fullmatch(r"[0-9]{1,9}", raw_size) else raw_size
    roster, input_size = validate_metadata(roster, input_size, f"{path} metadata")
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


def _read_safetensors(path: Path, tensors: bool) -> tuple[CheckpointInfo, MFFMoE | None]:
    from safetensors import SafetensorError, safe_open

    model = None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta, roster, input_size = _safetensors_meta(path, f)
            info = _safetensors_info(path, meta, roster, input_size)
            if tensors:
                model = build_model(roster, input_size, device="meta")
                state = _mmap_safetensors(path, list(f.keys()))
    except SafetensorError as e:
        raise CheckpointFormatError(f"{path}: not a readable safetensors file ({e})") from e
    except (KeyError, ValueError) as e:
        raise CheckpointFormatError(f"{path}: bad mffmoe metadata ({e})") from e
    if model is not None:
        check_state_dict(model, state, str(path))
        _assign(model, state)
    return info, model


def load_safetensors(path: Path) -> tuple[MFFMoE, CheckpointInfo]:
    info, model = _read_safetensors(path, tensors=True)
    assert model is not None
    return model, info


def read_info(path: str | os.PathLike[str], allow_missing_ema: bool = False) -> CheckpointInfo:
    """What `load_weights` reports about these weights, from metadata only (file names, the manifest, the
    safetensors header; no tensor is read): for callers that need the identity of the weights without a
    model, such as the Ray scan driver. The tensors are checked when the weights are loaded."""
    where, layout = _locate(path)
    if layout is None:
        return _read_safetensors(where, tensors=False)[0]
    roster, input_size = read_manifest(where)
    weights_path, ema_path = where / layout.weights, where / layout.ema
    if not ema_path.exists() and not allow_missing_ema:
        raise MissingEMAError(_MISSING_EMA.format(ema=ema_path, weights=weights_path.name, dir=where))
    files = {"weights": str(weights_path), **({"ema": str(ema_path)} if ema_path.exists() else {})}
    return CheckpointInfo(source=str(where), layout=layout.name, roster=roster, input_size=input_size,
                          ema=ema_path.exists(), files=files)


# --- writing the official layouts (training, tests) -----------------------------------------------
def save_official(model: MFFMoE, emas: Sequence[ExponentialMovingAverage] | None, directory: str | os.PathLike[str],
                  layout: str = "official", extra_state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write `model` (raw parameters) and its per-expert EMA states in an official layout, plus the manifest."""
    lay = next((x for x in LAYOUTS if x.name == layout), None)
    if lay is None:
        raise ValueError(f"unknown layout {layout!r}; choose from {[x.name for x in LAYOUTS]}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if not lay.prefixed:
        state = {k.removeprefix("experts."): v for k, v in state.items()}
    state.update(extra_state or {})
    _atomic_torch_save(state, directory / lay.weights)
    if emas is not None:
        if len(emas) != len(model.experts):
            raise ValueError("one EMA per expert is required")
        _atomic_torch_save({i: {**e.state_dict(), "shadow_params": [s.detach().cpu() for s in e.shadow_params]}
                            for i, e in enumerate(emas)}, directory / lay.ema)
    write_manifest(directory, model.roster, model.input_size)
    return directory


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def untrained_model(roster: Sequence[str] = DEFAULT_ROSTER, input_size: int = DEFAULT_INPUT_SIZE,
                    seed: int = 0) -> tuple[MFFMoE, CheckpointInfo]:
    """Random weights (seeded, so runs repeat) for trying the pipeline without the official files."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(roster, input_size).eval().requires_grad_(False)
    return model, CheckpointInfo(source="untrained", layout="untrained", roster=tuple(roster),
                                 input_size=input_size, ema=False)
