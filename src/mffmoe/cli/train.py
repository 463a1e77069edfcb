"""`mffmoe train`, and how a run shows its progress. torch and timm are imported inside the command.

Options that a resumed run takes from its saved settings default to None here ("as the run has it"),
so `train` has its own `--batch-size` and `--allow-missing-ema`, not the shared detector options.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from mffmoe.cli.options import AlignOpt, DeviceOpt, FaceMarginOpt, MinFaceOpt
from mffmoe.cli.output import err, fail, number, one_line, progress
from mffmoe.config import DEFAULT_DEVICE
from mffmoe.errors import ConfigError, MFFMoEError
from mffmoe.train.observer import Observer

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class ProgressObserver(Observer):
    """The trainer's observer for a terminal: a progress bar with the running loss, and one line per
    epoch with the validation AUCs."""

    def __init__(self, console: Console, bar: Progress) -> None:
        self.console, self.bar = console, bar
        self.tasks: dict[str, TaskID] = {}

    def _task(self, name: str, total: int | None) -> TaskID:
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=total, info="")
        return self.tasks[name]

    def on_prepare(self, what: str, done: int, total: int) -> None:
        self.bar.update(self._task(what, total), completed=done, total=total)

    def on_epoch_start(self, epoch: int, epochs: int, step: int, steps: int) -> None:
        for t in list(self.bar.task_ids):
            self.bar.remove_task(t)
        self.tasks = {"epoch": self.bar.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, completed=step,
                                                 info="")}

    def on_step(self, epoch: int, step: int, steps: int, losses: Sequence[float], lr: float) -> None:
        loss = sum(losses) / max(len(losses), 1)
        self.bar.update(self.tasks["epoch"], completed=step, info=f"loss {loss:.4f} lr {lr:.2e}")

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        r = record
        line = f"epoch {r['epoch']}: loss {r['train_loss']:.4f}"
        if "val_auc" in r:
            experts = " ".join(number(a, 3) for a in r["val_auc_experts"])
            line += f", val AUC {number(r['val_auc'])} (experts {experts})"
            if r.get("val_frame_auc") is not None:
                line += f", frame AUC {number(r['val_frame_auc'])}"
        self.console.print(line + f" [{r['seconds']:.1f}s]", highlight=False, soft_wrap=True)

    def on_warning(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False)


def train(
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Run folder: checkpoints, logs; the newest weights are placed here (loadable with "
                            "--weights OUT), the best in OUT/best.")],
    data: Annotated[str | None, typer.Option(
        "--data", "-d", help="Folder with real/ and fake/, or a CSV with columns path,label (real/fake or "
                             "0/1).")] = None,
    val: Annotated[str | None, typer.Option("--val", help="Validation set (same forms as --data).")] = None,
    val_split: Annotated[float | None, typer.Option(
        "--val-split", min=0.0, max=0.9, help="Share of --data held out for validation when --val is not given "
                                              "(stratified, by file) (default: 0.1; 0: none).")] = None,
    experts: Annotated[list[str] | None, typer.Option(
        "--experts", help="timm model names, comma-separated or repeated (default: the spec's seven, or "
                          "--init's).")] = None,
    init: Annotated[str | None, typer.Option(
        "--init", help="Start from this checkpoint (official layouts or .safetensors): raw weights and EMA "
                       "state.")] = None,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", min=8, help="(default: --init's, else 512)")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="(default: 10)")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", min=1, help="(default: 16)")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak AdamW learning rate (default: 1e-4).")] = None,
    min_lr: Annotated[float | None, typer.Option("--min-lr", help="(default: 1e-6)")] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", help="(default: 0.05)")] = None,
    warmup_epochs: Annotated[float | None, typer.Option("--warmup-epochs", help="(default: 1)")] = None,
    ema_decay: Annotated[float | None, typer.Option("--ema-decay", help="(default: 0.995, adaptive)")] = None,
    augment: Annotated[str | None, typer.Option(
        "--augment", help="Comma-separated from hflip, jpeg, blur, resize, or 'none' (default: all "
                          "four).")] = None,
    frames_per_video: Annotated[int | None, typer.Option(
        "--frames-per-video", min=1, help="Frames sampled from each video (default: 16).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="(default: 0)")] = None,
    amp: Annotated[bool | None, typer.Option(
        "--amp/--no-amp", help="Mixed precision on CUDA (default: on).")] = None,
    save_every: Annotated[int | None, typer.Option(
        "--save-every", min=0, help="Also checkpoint every N steps (default: epoch ends only).")] = None,
    allow_missing_ema: Annotated[bool | None, typer.Option(
        "--allow-missing-ema", help="Accept an --init without .state (EMA restarts).")] = None,
    crop: Annotated[str | None, typer.Option(
        "--crop", metavar="[frame|faces|auto]",
        help="frame: whole frames; faces/auto: the face crops inference scores (an image or frame without a "
             "face: the whole frame), found once at the start. Recorded in the checkpoint, whose inference "
             "then defaults to it. Default: --init's trained mode, else frame.")] = None,
    face_margin: FaceMarginOpt = None,
    align: AlignOpt = None,
    min_face: MinFaceOpt = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    device: DeviceOpt = DEFAULT_DEVICE,
    workers: Annotated[int, typer.Option(
        "--workers", min=0, help="Data-loading processes (0: in the main process).")] = min(4, os.cpu_count() or 1),
    keep: Annotated[int, typer.Option("--keep", min=1, help="Checkpoints kept in OUT/checkpoints.")] = 1,
) -> None:
    """Train (or fine-tune) every expert with its own optimizer and EMA; write official checkpoints."""
    from pydantic import ValidationError

    from mffmoe.config import config_error
    from mffmoe.train.augment import parse_augmentations
    from mffmoe.train.trainer import Trainer, resolve_config

    given: dict[str, Any] = {"out": str(out)}
    options = dict(data=data, val=val, val_split=val_split, init=init, input_size=input_size, epochs=epochs,
                   batch_size=batch_size, lr=lr, min_lr=min_lr, weight_decay=weight_decay,
                   warmup_epochs=warmup_epochs, ema_decay=ema_decay, frames_per_video=frames_per_video,
                   seed=seed, amp=amp, save_every=save_every, allow_missing_ema=allow_missing_ema, crop=crop,
                   face_margin=face_margin, align=align, min_face=min_face)
    given.update({k: v for k, v in options.items() if v is not None})
    try:
        if experts:
            given["experts"] = [n.strip() for part in experts for n in part.split(",") if n.strip()]
            import timm

            unknown = [n for n in given["experts"] if not timm.is_model(n.split(".")[0])]
            if unknown:
                raise ConfigError(f"unknown timm model(s) {unknown}")
        if augment is not None:
            given["augment"] = list(parse_augmentations(augment))
        try:
            config = resolve_config(given, resume)
        except ValidationError as e:
            raise config_error(e, "training options") from None
    except MFFMoEError as e:
        raise fail(str(e)) from None
    bar = progress(err, info=True)
    try:
        with bar:
            trainer = Trainer(config, device=device, workers=workers, keep=keep,
                              observer=ProgressObserver(err, bar))
            result = trainer.fit(resume=resume)
    except MFFMoEError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        one_line(f"interrupted; continue with: mffmoe train --out {out} --resume", None)
        raise typer.Exit(130) from None
    last = result.records[-1] if result.records else {}
    err.print(f"weights: {out} (step {result.global_step}, crop {trainer.config.crop}"
              + (f", val AUC {number(last.get('val_auc'))}" if "val_auc" in last else "") + ")"
              + (f"; best: {out / 'best'}" if (out / "best").exists() else "")
              + f"; log: {out / 'metrics.jsonl'}", soft_wrap=True, highlight=False)
    if result.failures:
        one_line(f"{len(result.failures)} file(s) were skipped (see the warnings above)", "yellow")
