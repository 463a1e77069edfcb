"""Training every expert of the roster, each with its own optimizer and its own EMA, as upstream did.

One batch trains the experts one after the other (only one expert's graph is alive at a time), each:
cross-entropy on 2 classes -> AdamW step -> cosine-with-warm-up learning rate -> EMA update (decay
0.995, adaptive). Validation runs on the EMA weights, the ones the written checkpoint serves.

Checkpoints go to `OUT/checkpoints/step-N/` (official `.pth` + `.state` + `mffmoe.json` + the resume
state) written in a temporary folder and renamed when complete, so an interruption never leaves a
half-written checkpoint; the newest one is hard-linked into OUT itself, which `mffmoe analyze
--weights OUT` then loads as is (and the best by validation AUC into OUT/best/).

Crop mode (`crop`): `frame` trains on whole frames (the spec's input); `faces` and `auto` (the same in
training, as in inference) on the face crops the detector's faces step cuts (see `train.data`), found
once when the run starts. The manifest records the mode and, for faces, the crop settings, so inference
with the weights defaults to what they were trained on (`checkpoint.trained_crop`,
`checkpoint.trained_face_options`). Default: `--init`'s trained mode when fine-tuning, else `frame`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from mffmoe._util.fs import atomic_replace_dir
from mffmoe.config import (
    DEFAULT_FACE_DETECTOR,
    DEFAULT_INPUT_SIZE,
    DEFAULT_MAX_FACES,
    DEFAULT_ROSTER,
    EMA_DECAY,
    FACE_DEFAULTS,
)
from mffmoe.datasets import read_dataset
from mffmoe.errors import TrainingError
from mffmoe.evaluation.metrics import auc_or_none, binary_metrics
from mffmoe.model.checkpoint import (
    LAYOUTS,
    MANIFEST,
    load_unfolded,
    read_info,
    save_official,
    trained_crop,
    trained_face_options,
    write_manifest,
)
from mffmoe.model.ema import ExponentialMovingAverage
from mffmoe.model.ensemble import MFFMoE, build_model
from mffmoe.train.augment import Augment, parse_augmentations
from mffmoe.train.data import (
    Batch,
    EpochOrder,
    FaceCropping,
    Sample,
    SampleDataset,
    collate,
    load_samples,
    prepare_samples,
    require_both_classes,
    save_samples,
    split,
)
from mffmoe.train.observer import Observer

STATE_FILE = "train_state.pt"
STATE_FORMAT = "mffmoe-train-state-v1"
SAMPLES_FILE = "samples.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
PATH_FIELDS = ("data", "val", "init", "out")
FACES_CACHE = "faces"
#: How validation pools the faces of one image or frame: inference's default `face_pooling`.
FACE_POOLING = "max"


class TrainConfig(BaseModel):
    """Everything that defines a run; saved with each checkpoint and reused by `--resume`."""

    model_config = ConfigDict(extra="forbid")

    data: str
    out: str
    val: str | None = None
    val_split: float = Field(0.1, ge=0.0, lt=1.0)
    experts: list[str] | None = None       # None: the spec's seven (or --init's roster)
    init: str | None = None
    allow_missing_ema: bool = False
    input_size: int | None = Field(None, ge=8)  # None: --init's, else 512
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0)
    min_lr: float = Field(1e-6, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    ema_decay: float = Field(EMA_DECAY, ge=0, le=1)
    augment: list[str] = Field(default_factory=lambda: list(parse_augmentations(None)))
    frames_per_video: int = Field(16, ge=1)
    seed: int = 0
    amp: bool = True                          # mixed precision (fp16 + grad scaling), CUDA only
    save_every: int = Field(0, ge=0)          # also checkpoint every N steps (0: at epoch ends only)
    crop: Literal["frame", "faces", "auto"] | None = None  # None: --init's trained mode, else frame
    # None: --init's trained settings, else the detector's defaults (decided with the crop: `with_crop`)
    face_margin: float | None = Field(None, ge=1.0, le=3.0)
    align: bool | None = None
    min_face: int | None = Field(None, ge=8)

    #: May differ on --resume (they do not change what is computed).
    RUNTIME: ClassVar[frozenset[str]] = frozenset({"amp"})


@dataclass
class Position:
    epoch: int = 0           # epoch in progress (0-based)
    step_in_epoch: int = 0   # batches of it already done
    global_step: int = 0
    best_auc: float | None = None
    best_step: int | None = None
    loss_sums: list[float] = field(default_factory=list)  # of the epoch in progress, for its log line
    loss_count: int = 0


@dataclass
class TrainResult:
    out: Path
    checkpoint: Path
    global_step: int
    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


# --- run state on disk ------------------------------------------------------------------------------
def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted writes are not listed)."""
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")
                  and (p / STATE_FILE).exists())


def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    dirs = checkpoint_dirs(Path(out))
    return dirs[-1] if dirs else None


def load_train_state(checkpoint: Path) -> dict[str, Any]:
    try:
        state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable state is the same problem for the user
        raise TrainingError(f"{checkpoint / STATE_FILE}: cannot read the resume state ({e})") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainingError(f"{checkpoint / STATE_FILE}: not an mffmoe training state")
    return state


def resolve_config(given: dict[str, Any], resume: bool) -> TrainConfig:
    """Fresh run: the options given. Resume: the saved run's settings; options given must agree.
    Paths are made absolute, so a run can be resumed from any working directory."""
    given = {k: str(Path(v).expanduser().resolve()) if k in PATH_FIELDS and v is not None else v
             for k, v in given.items()}
    out = Path(given["out"])
    if not resume:
        if latest_checkpoint(out) is not None:
            raise TrainingError(f"{out} already holds a training run; pass --resume to continue it, or "
                                f"choose another --out")
        if "data" not in given:
            raise TrainingError("--data is required")
        return with_crop(TrainConfig(**given))
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise TrainingError(f"nothing to resume: {out} holds no checkpoint (looked in {out / CHECKPOINTS})")
    saved = TrainConfig(**{"crop": "frame", **load_train_state(ckpt)["config"]})  # runs from before crop: frames
    saved_values = saved.model_dump()
    conflicts = [f"--{k.replace('_', '-')} {v!r} (run has {saved_values[k]!r})" for k, v in given.items()
                 if k not in {"out"} | TrainConfig.RUNTIME and k in saved_values and v != saved_values[k]]
    if conflicts:
        raise TrainingError("--resume continues the saved run with its own settings; these differ: "
                            + "; ".join(conflicts))
    return saved.model_copy(update={"out": str(out), **{k: v for k, v in given.items() if k in TrainConfig.RUNTIME}})


def default_crop(init: str | None) -> str:
    """The crop mode a run trains on when none is given: what `init`'s weights were trained on (the official
    weights: auto, i.e. faces), else the spec's whole frame."""
    if not init:
        return "frame"
    return trained_crop(read_info(init, allow_missing_ema=True))


def with_crop(config: TrainConfig) -> TrainConfig:
    """`config` with its crop mode and face settings decided (saved so, a resumed run keeps them): what
    is not given comes from `--init`'s weights (what they were trained with), else the defaults."""
    trained = trained_face_options(read_info(config.init, allow_missing_ema=True)) if config.init else {}
    update: dict[str, Any] = {k: trained.get(k, d) for k, d in FACE_DEFAULTS.items() if getattr(config, k) is None}
    if config.crop is None:
        update["crop"] = default_crop(config.init)
    return config.model_copy(update=update) if update else config


def manifest_crop(config: TrainConfig) -> dict[str, Any]:
    """What the manifest records about the input the weights were trained on (DetectorConfig's names)."""
    crop = config.crop or "frame"
    if crop == "frame":
        return {"crop": crop}
    return {"crop": crop, "face_margin": config.face_margin, "align": config.align, "min_face": config.min_face}


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # file systems without hard links: a copy is the same bytes
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def publish(checkpoint: Path, target: Path) -> None:
    """Make `target` a loadable weights folder holding `checkpoint`'s official files."""
    target.mkdir(parents=True, exist_ok=True)
    lay = LAYOUTS[0]
    for name in (lay.weights, lay.ema, MANIFEST):
        _link_or_copy(checkpoint / name, target / name)


# --- the trainer ----------------------------------------------------------------------------------
class Trainer:
    def __init__(self, config: TrainConfig, device: str = "auto", workers: int = 2, keep: int = 1,
                 observer: Observer | None = None) -> None:
        from mffmoe.engine.device import resolve_device

        self.config = config = with_crop(config)
        self.out = Path(config.out)
        self.device = resolve_device(device)
        self.workers = max(0, workers)
        self.keep = max(1, keep)
        self.obs: Observer = observer or Observer()
        self.amp = bool(config.amp and self.device.type == "cuda")
        self.augment = Augment(parse_augmentations(config.augment))

    # -- setup -----------------------------------------------------------------------------------
    def _samples(self, resume: bool) -> tuple[list[Sample], list[Sample], list[tuple[str, str]]]:
        """The run's train/validation samples, fixed at its start (saved, so --resume sees the same)."""
        path = self.out / SAMPLES_FILE
        if resume and path.exists():
            saved = load_samples(path)
            return saved["train"], saved["val"], []
        c = self.config
        items = read_dataset(c.data)
        if c.val:
            train_items, val_items = items, read_dataset(c.val)
        else:
            train_items, val_items = split(items, c.val_split, c.seed)
        cache = self.out / "frames"
        failures: list[tuple[str, str]] = []
        faces = self._face_cropping()
        try:
            train, bad = prepare_samples(train_items, c.frames_per_video, cache, max(1, self.workers),
                                         lambda d, t: self.obs.on_prepare("train data", d, t), faces)
            failures += bad
            val, bad = prepare_samples(val_items, c.frames_per_video, cache, max(1, self.workers),
                                       lambda d, t: self.obs.on_prepare("validation data", d, t), faces)
            failures += bad
        finally:
            if faces is not None:
                faces.finder.close()
        require_both_classes(train, "the training set")
        if val:
            require_both_classes(val, "the validation set")
        save_samples(path, train=train, val=val)
        return train, val, failures

    def _face_cropping(self) -> FaceCropping | None:
        """The faces step inference runs for these settings (None in frame mode)."""
        c = self.config
        if c.crop in (None, "frame"):
            return None
        from mffmoe.faces.finder import FaceFinder

        assert c.face_margin is not None and c.align is not None and c.min_face is not None  # with_crop
        finder = FaceFinder(DEFAULT_FACE_DETECTOR, margin=c.face_margin, align=c.align, min_face=c.min_face,
                            max_faces=DEFAULT_MAX_FACES)
        return FaceCropping(finder, self.out / FACES_CACHE)

    def _model(self, resume_from: Path | None) -> tuple[MFFMoE, list[dict[str, Any]] | None]:
        c = self.config
        source = resume_from or (Path(c.init) if c.init else None)
        if source is None:
            return build_model(c.experts or DEFAULT_ROSTER, c.input_size or DEFAULT_INPUT_SIZE), None
        loaded, emas, info = load_unfolded(source, allow_missing_ema=c.allow_missing_ema)
        if c.experts and tuple(c.experts) != tuple(info.roster) and resume_from is None:
            raise TrainingError(f"--experts {c.experts} differs from the roster of --init {source}: "
                                f"{list(info.roster)}; leave --experts out to train the checkpoint's roster")
        size = c.input_size or info.input_size
        model = build_model(info.roster, size)   # fresh storage: the loaded tensors may be memory-mapped
        model.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
        return model, emas

    # -- main loop -------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        if c.init and Path(c.init).resolve() == self.out.resolve():
            raise TrainingError("--out must differ from --init: training would overwrite the weights it starts from")
        for stale in (self.out / CHECKPOINTS).glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        ckpt = latest_checkpoint(self.out) if resume else None
        if resume and ckpt is None:
            raise TrainingError(f"nothing to resume: {self.out} holds no checkpoint")
        if not resume and latest_checkpoint(self.out) is not None:
            raise TrainingError(f"{self.out} already holds a training run; resume it or choose another out")
        state = load_train_state(ckpt) if ckpt else None
        if state is None:
            (self.out / METRICS_FILE).unlink(missing_ok=True)
            torch.manual_seed(c.seed)

        train, val, failures = self._samples(resume)
        for path, why in failures:
            self.obs.on_warning(f"skipped {path}: {why}")
        model, ema_states = self._model(ckpt)
        model.to(self.device).train().requires_grad_(True)
        experts = list(model.experts)
        steps = math.ceil(len(train) / c.batch_size)
        total = steps * c.epochs
        warmup = min(round(c.warmup_epochs * steps), total // 2)

        from timm.optim import create_optimizer_v2
        from timm.scheduler import CosineLRScheduler

        optimizers = [create_optimizer_v2(e.baseline_extractor, opt="adamw", lr=c.lr, weight_decay=c.weight_decay)
                      for e in experts]
        scalers = [torch.amp.GradScaler("cuda", enabled=self.amp) for _ in experts]
        emas = [ExponentialMovingAverage(e.parameters(), decay=c.ema_decay) for e in experts]
        if ema_states is not None:
            for ema, s in zip(emas, ema_states, strict=True):
                ema.load_state_dict(s)
                ema.decay = c.ema_decay  # --init's checkpoint may have used another decay
        pos = Position()
        if state is not None:
            for opt, s in zip(optimizers, state["optimizers"], strict=True):
                opt.load_state_dict(s)
            for scaler, s in zip(scalers, state["scalers"], strict=True):
                if s:
                    scaler.load_state_dict(s)
            pos = Position(**state["position"])
            torch.set_rng_state(state["torch_rng"])
            if self.device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
            self._truncate_log(pos.global_step)
        schedulers = [CosineLRScheduler(opt, t_initial=max(1, total - warmup), lr_min=c.min_lr, warmup_t=warmup,
                                        warmup_lr_init=c.lr * 0.01, warmup_prefix=True, t_in_epochs=False)
                      for opt in optimizers]
        for sched in schedulers:
            sched.step_update(pos.global_step)

        dataset = SampleDataset(train, model.input_size, self.augment, seed=c.seed)
        val_set = SampleDataset(val, model.input_size, None, seed=c.seed)
        records: list[dict[str, Any]] = []
        last_ckpt = ckpt
        bad_samples: dict[str, str] = {}
        while pos.epoch < c.epochs:
            epoch = pos.epoch
            order = EpochOrder(len(dataset), epoch, c.seed, shuffle=True, skip=pos.step_in_epoch * c.batch_size)
            loader = self._loader(dataset, order)
            self.obs.on_epoch_start(epoch, c.epochs, pos.step_in_epoch, steps)
            sums, count, t0 = np.zeros(len(experts)), 0, time.perf_counter()
            if pos.step_in_epoch and pos.loss_sums:
                sums, count = np.array(pos.loss_sums), pos.loss_count
            for batch in loader:
                for i, why in batch.failures:
                    if train[i].source not in bad_samples:
                        bad_samples[train[i].source] = why
                        self.obs.on_warning(f"skipped {train[i].source}: {why}")
                if batch.x is not None:
                    losses = self._step(experts, optimizers, scalers, emas, batch)
                    sums += losses
                    count += 1
                pos.step_in_epoch += 1
                pos.global_step += 1
                for sched in schedulers:
                    sched.step_update(pos.global_step)
                lr = optimizers[0].param_groups[0]["lr"]
                self.obs.on_step(epoch, pos.step_in_epoch, steps,
                                 list(sums / max(count, 1)), lr)
                if c.save_every and pos.global_step % c.save_every == 0 and pos.step_in_epoch < steps:
                    pos.loss_sums, pos.loss_count = [float(v) for v in sums], count
                    last_ckpt = self._save(model, emas, optimizers, scalers, pos, None)
            pos.epoch += 1
            pos.step_in_epoch = 0
            pos.loss_sums, pos.loss_count = [], 0
            record: dict[str, Any] = {"epoch": epoch + 1, "step": pos.global_step,
                                      "train_loss": float(np.mean(sums / max(count, 1))),
                                      "train_loss_experts": [float(v) for v in sums / max(count, 1)],
                                      "lr": optimizers[0].param_groups[0]["lr"],
                                      "seconds": round(time.perf_counter() - t0, 3),
                                      "skipped_samples": len(bad_samples)}
            if val:
                record.update(self.validate(model, emas, val_set, val))
                auc = record.get("val_auc")
                if auc is not None and (pos.best_auc is None or auc > pos.best_auc):
                    pos.best_auc, pos.best_step = auc, pos.global_step
            last_ckpt = self._save(model, emas, optimizers, scalers, pos, record)
            with open(self.out / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            records.append(record)
            self.obs.on_epoch_end(record)
        if last_ckpt is None:
            raise TrainingError("no epoch was run (the run was already complete?)")
        return TrainResult(self.out, last_ckpt, pos.global_step, records,
                           failures + sorted(bad_samples.items()))

    def _loader(self, dataset: SampleDataset, order: EpochOrder) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(dataset, batch_size=self.config.batch_size, sampler=order,
                                           num_workers=self.workers, collate_fn=collate,
                                           pin_memory=self.device.type == "cuda",
                                           persistent_workers=False,
                                           generator=torch.Generator().manual_seed(self.config.seed))

    def _step(self, experts: list, optimizers: list, scalers: list, emas: list, batch: Batch) -> np.ndarray:
        """One batch through every expert in turn: loss, optimizer step, EMA update."""
        assert batch.x is not None, "batches whose samples all failed are skipped before this"
        x = batch.x.to(self.device, non_blocking=True)
        y = batch.y.to(self.device, non_blocking=True)
        losses = np.zeros(len(experts))
        for i, (expert, opt, scaler, ema) in enumerate(zip(experts, optimizers, scalers, emas, strict=True)):
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                logits = expert(x)
            loss = F.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise TrainingError(f"expert {i} ({expert.name}): the loss became {loss.item()} "
                                    f"(diverged); try a lower --lr")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            ema.update()
            losses[i] = loss.item()
        return losses

    @torch.no_grad()
    def predict(self, model: MFFMoE, emas: Sequence[ExponentialMovingAverage], dataset: SampleDataset,
                ) -> np.ndarray:
        """Per-expert P(fake) [N, E] on the EMA weights (eval mode), in dataset order."""
        rows = np.zeros((len(dataset), len(model.experts)))
        done = np.zeros(len(dataset), dtype=bool)
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.config.batch_size,
                                             sampler=EpochOrder(len(dataset), 0, 0, shuffle=False),
                                             num_workers=self.workers, collate_fn=collate,
                                             generator=torch.Generator().manual_seed(0))
        model.eval()
        try:
            with contextlib.ExitStack() as stack:
                for ema in emas:
                    stack.enter_context(ema.average_parameters())
                for batch in loader:
                    if batch.x is None:
                        continue
                    x = batch.x.to(self.device)
                    with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                        probs = model(x).float()
                    rows[batch.indices] = probs.double().cpu().numpy()
                    done[batch.indices] = True
        finally:
            for ema in emas:
                ema.collected_params = None  # the stored raw copy; else it would be saved into .state
            model.train()
        rows[~done] = np.nan
        return rows

    def validate(self, model: MFFMoE, emas: Sequence[ExponentialMovingAverage], val_set: SampleDataset,
                 samples: Sequence[Sample]) -> dict[str, Any]:
        """Validation AUC of each expert and of the ensemble (the mean), per item (a video's frames
        averaged, as the detector pools them) and, when videos are present, per frame."""
        probs = self.predict(model, emas, val_set)
        ok = ~np.isnan(probs).any(axis=1)
        labels = np.array([s.label for s in samples])[ok]
        groups = np.array([s.group for s in samples])[ok]
        probs = probs[ok]
        frames = np.array([-1 if s.frame_index is None else s.frame_index for s in samples])[ok]
        labels, groups, probs = _pool_faces(labels, groups, frames, probs)
        uniq, inverse = np.unique(groups, return_inverse=True)
        item_probs = np.zeros((len(uniq), probs.shape[1]))
        np.add.at(item_probs, inverse, probs)
        item_probs /= np.bincount(inverse)[:, None]
        item_labels = np.zeros(len(uniq), dtype=int)
        item_labels[inverse] = labels
        ensemble = item_probs.mean(axis=1)
        m = binary_metrics(item_labels, ensemble)
        out: dict[str, Any] = {
            "val_auc": m["auc"],
            "val_auc_experts": [auc_or_none(item_labels, item_probs[:, j]) for j in range(probs.shape[1])],
            "val_accuracy": m["accuracy"], "val_eer": m["eer"], "val_ap": m["ap"],
            "val_items": int(len(uniq)), "val_failed": int((~ok).sum()),
        }
        if len(uniq) < len(labels):  # some items are videos with several frames
            out["val_frame_auc"] = auc_or_none(labels, probs.mean(axis=1))
            out["val_frame_auc_experts"] = [auc_or_none(labels, probs[:, j]) for j in range(probs.shape[1])]
        return out

    # -- checkpoints -----------------------------------------------------------------------------
    def _save(self, model: MFFMoE, emas: list, optimizers: list, scalers: list, pos: Position,
              record: dict[str, Any] | None) -> Path:
        root = self.out / CHECKPOINTS
        name = f"step-{pos.global_step:08d}"
        tmp = root / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        save_official(model, emas, tmp, layout="official")
        write_manifest(tmp, model.roster, model.input_size, **manifest_crop(self.config),
                       trained={"epochs_done": pos.epoch, "step": pos.global_step,
                                **({"val_auc": record.get("val_auc")} if record and "val_auc" in record else {})})
        state = {
            "format": STATE_FORMAT,
            "config": self.config.model_dump(),
            "position": vars(pos).copy(),
            "optimizers": [o.state_dict() for o in optimizers],
            "scalers": [s.state_dict() for s in scalers],
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        torch.save(state, tmp / STATE_FILE)
        final = root / name
        atomic_replace_dir(tmp, final)
        publish(final, self.out)
        if record is not None and pos.best_step == pos.global_step:
            publish(final, self.out / "best")
        for old in checkpoint_dirs(self.out)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _truncate_log(self, global_step: int) -> None:
        """Drop log lines written after the checkpoint we resume from (their epoch is redone)."""
        path = self.out / METRICS_FILE
        if not path.exists():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in lines if json.loads(ln).get("step", 0) <= global_step]
        if len(keep) != len(lines):
            path.write_text("".join(ln + "\n" for ln in keep))


def _pool_faces(labels: np.ndarray, groups: np.ndarray, frames: np.ndarray, probs: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per image or video frame: the faces of one (FACE_POOLING: each expert's highest P(fake),
    as inference's default face pooling scores an image). Rows without faces pass unchanged."""
    keys = [f"{g}\0{f}" for g, f in zip(groups, frames, strict=True)]
    if len(set(keys)) == len(keys):
        return labels, groups, probs
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    pooled = np.full((len(uniq), probs.shape[1]), -np.inf)
    np.maximum.at(pooled, inverse, probs)
    return labels[first], groups[first], pooled


def train(config: TrainConfig, resume: bool = False, **kwargs: Any) -> TrainResult:
    """Library entry point: `train(TrainConfig(data=..., out=...))`."""
    return Trainer(config, **kwargs).fit(resume=resume)
