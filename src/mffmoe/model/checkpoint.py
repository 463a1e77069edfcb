"""Checkpoint formats: the two official layouts users hold, and our converted safetensors file.

What a checkpoint is (layouts, `CheckpointInfo`, manifests, `read_info`) lives in `info.py`, without
torch; it is re-exported here. This module reads and writes the tensors.

Loading is strict (keys, shapes, EMA list lengths), pickle-free (`weights_only=True`), and lean: the
model is built on the meta device and the tensors of the files are assigned into it (memory-mapped
where the format allows), so no second full copy of the weights is ever resident. The EMA shadow
parameters are folded in here, once; inference never swaps parameters.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mffmoe._util.fs import atomic_path, atomic_write
from mffmoe.config import DEFAULT_INPUT_SIZE, DEFAULT_ROSTER
from mffmoe.errors import (
    CheckpointFormatError,
    MissingEMAError,
    UnsafeCheckpointError,
    WeightsNotFoundError,
)
from mffmoe.model.ema import ExponentialMovingAverage, validate_ema_state
from mffmoe.model.ensemble import MFFMoE, build_model
from mffmoe.model.info import (
    _MISSING_EMA,
    FACE_OPTIONS,
    IGNORED_PREFIXES,
    INPUT_SIZE_RANGE,
    LAYOUTS,
    MANIFEST,
    MAX_EXPERTS,
    SAFETENSORS_FORMAT,
    CheckpointInfo,
    Layout,
    _locate,
    _recorded,
    _safetensors_info,
    _safetensors_meta,
    count_experts,
    find_layout,
    read_info,
    read_manifest,
    trained_crop,
    trained_face_options,
    trained_settings,
    validate_metadata,
    write_manifest,
)

__all__ = ["FACE_OPTIONS", "IGNORED_PREFIXES", "INPUT_SIZE_RANGE", "LAYOUTS", "MANIFEST", "MAX_EXPERTS",
           "SAFETENSORS_FORMAT", "CheckpointInfo", "Layout", "count_experts", "find_layout", "read_info",
           "read_manifest", "trained_crop", "trained_face_options", "trained_settings", "validate_metadata",
           "write_manifest", "load_weights", "load_official", "load_safetensors", "load_unfolded",
           "save_official", "save_safetensors", "safe_torch_load", "untrained_model", "check_state_dict"]

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


def load_weights(path: str | os.PathLike[str], allow_missing_ema: bool = False) -> tuple[MFFMoE, CheckpointInfo]:
    """Load a weights directory (either official layout) or a converted `.safetensors` file."""
    where, layout = _locate(path)
    if layout is None:
        return load_safetensors(where)
    return load_official(where, layout, allow_missing_ema=allow_missing_ema)


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
