"""Resume continues exactly where the run stopped; --init starts from a checkpoint's raw weights AND its
EMA state; a run's settings are protected from silent changes."""
from __future__ import annotations

import json

import pytest
import torch

from mffmoe.testing.checkpoints import TINY_ROSTER, make_random_checkpoint
from mffmoe.testing.planted import make_planted_dataset
from mffmoe.train.observer import Observer
from mffmoe.train.trainer import TrainConfig, Trainer, checkpoint_dirs
from train_helpers import TINY, one_thread, read_log, run_cli, said  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

ARGS = ["--experts", TINY, "--input-size", 32, "--epochs", 2, "--batch-size", 8, "--lr", 1e-3,
        "--val-split", 0.25, "--frames-per-video", 2, "--save-every", 2, "--workers", 0, "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_planted_dataset(tmp_path_factory.mktemp("resume") / "data", 14, 14, size=32,
                                videos_per_class=1, frames_per_video=6, seed=3)


class StopAt(Observer):
    def __init__(self, step: int) -> None:
        self.step, self.seen = step, 0

    def on_step(self, epoch, step, steps, losses, lr) -> None:
        self.seen += 1
        if self.seen == self.step:
            raise KeyboardInterrupt


def _tensors(out):
    pth = torch.load(out / "MFF-MoE-v1.pth", weights_only=True)
    state = torch.load(out / "MFF-MoE-v1.state", weights_only=True)
    return pth, state


def _without_time(log):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in log]


def test_resume_mid_epoch_gives_the_same_run_as_no_interruption(data, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run_cli("train", "--data", data, "--out", straight, *ARGS)
    # the same run, killed at step 3 (mid-epoch; the last checkpoint is step 2's)
    config = TrainConfig(data=str(data), out=str(stopped), experts=list(TINY_ROSTER), input_size=32, epochs=2,
                         batch_size=8, lr=1e-3, val_split=0.25, frames_per_video=2, save_every=2)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, device="cpu", workers=0, observer=StopAt(3)).fit()
    assert [p.name for p in checkpoint_dirs(stopped)] == ["step-00000002"]
    res = run_cli("train", "--out", stopped, "--resume", "--workers", 0, "--device", "cpu")
    assert "epoch 2" in said(res)
    (a_pth, a_state), (b_pth, b_state) = _tensors(straight), _tensors(stopped)
    assert a_pth.keys() == b_pth.keys()
    for k in a_pth:
        assert torch.equal(a_pth[k], b_pth[k]), k
    for i in range(len(TINY_ROSTER)):
        assert a_state[i]["num_updates"] == b_state[i]["num_updates"]
        for s, t in zip(a_state[i]["shadow_params"], b_state[i]["shadow_params"], strict=True):
            assert torch.equal(s, t)
    assert _without_time(read_log(straight)) == _without_time(read_log(stopped))
    # the optimizer moments were restored too: the two resume states agree
    sa = torch.load(checkpoint_dirs(straight)[-1] / "train_state.pt", weights_only=True)
    sb = torch.load(checkpoint_dirs(stopped)[-1] / "train_state.pt", weights_only=True)
    for oa, ob in zip(sa["optimizers"], sb["optimizers"], strict=True):
        for key in oa["state"]:
            assert torch.equal(oa["state"][key]["exp_avg"], ob["state"][key]["exp_avg"])


def test_run_settings_are_protected(data, tmp_path):
    out = tmp_path / "run"
    run_cli("train", "--data", data, "--out", out, *ARGS[:-6], "--epochs", 1, "--workers", 0)
    res = run_cli("train", "--data", data, "--out", out, "--experts", TINY, expect=2)
    assert "already holds a training run" in said(res)
    res = run_cli("train", "--out", out, "--resume", "--lr", 0.5, expect=2)
    assert "--lr 0.5" in said(res) and "0.001" in said(res)
    res = run_cli("train", "--out", tmp_path / "empty", "--resume", expect=2)
    assert "nothing to resume" in said(res)
    res = run_cli("train", "--data", data, "--out", tmp_path / "x", "--experts", "no_such_net", expect=2)
    assert "no_such_net" in said(res)


def test_init_starts_from_raw_weights_and_ema_state(data, tmp_path):
    init = make_random_checkpoint(tmp_path / "init", TINY_ROSTER, 32, seed=5)
    init_pth, init_state = _tensors(init)
    out = tmp_path / "ft"
    # lr so small the raw weights stay put: then the EMA follows a formula we can check
    run_cli("train", "--data", data, "--out", out, "--init", init, "--epochs", 1, "--batch-size", 8,
            "--lr", 1e-12, "--min-lr", 0, "--val-split", 0, "--augment", "none", "--frames-per-video", 2,
            "--workers", 0, "--device", "cpu")
    steps = read_log(out)[-1]["step"]
    pth, state = _tensors(out)
    manifest = json.loads((out / "mffmoe.json").read_text())
    assert manifest["roster"] == list(TINY_ROSTER)
    assert manifest["crop"] == "auto"  # --init's trained mode (no manifest crop: the official weights', auto)
    raw = {k: v for k, v in init_pth.items() if not k.startswith(("ema_list", "ema_state"))}
    for k, v in raw.items():
        if v.is_floating_point() and "running_" not in k:  # BatchNorm statistics do move in training
            torch.testing.assert_close(pth[k], v, rtol=0, atol=1e-9)
    from mffmoe.model.ensemble import build_model
    names = [[n for n, _ in e.named_parameters()] for e in build_model(TINY_ROSTER, 32, device="meta").experts]
    for i in range(len(TINY_ROSTER)):
        n0 = init_state[i]["num_updates"]
        assert state[i]["num_updates"] == n0 + steps
        keep = 1.0
        for t in range(n0 + 1, n0 + steps + 1):
            keep *= min(0.995, (1 + t) / (10 + t))
        for name, s0, s in zip(names[i], init_state[i]["shadow_params"], state[i]["shadow_params"], strict=True):
            p0 = raw[f"experts.{i}.{name}"]
            torch.testing.assert_close(s, keep * s0 + (1 - keep) * p0, rtol=1e-5, atol=1e-6)
        assert any(not torch.equal(s, s0) for s, s0 in zip(state[i]["shadow_params"],
                                                          init_state[i]["shadow_params"], strict=True))


def test_init_errors(data, tmp_path):
    init = make_random_checkpoint(tmp_path / "init", TINY_ROSTER, 32)
    res = run_cli("train", "--data", data, "--out", tmp_path / "o", "--init", init, "--experts",
                  "test_convnext", "--workers", 0, expect=2)
    assert "differs from the roster" in said(res)
    res = run_cli("train", "--data", data, "--out", init, "--init", init, "--workers", 0, expect=2)
    assert "--out must differ from --init" in said(res)
