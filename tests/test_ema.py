"""EMA arithmetic and the upstream state-dict format, on CPU."""
import pytest
import torch

from mffmoe.model.ema import ExponentialMovingAverage


def _params(*shapes):
    return [torch.nn.Parameter(torch.randn(*s)) for s in shapes]


def test_update_follows_adaptive_decay_formula():
    params = _params((3, 4), (5,))
    ema = ExponentialMovingAverage(params, decay=0.995)
    shadow = [p.detach().clone() for p in params]
    for n in range(1, 30):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p))
        ema.update()
        decay = min(0.995, (1 + n) / (10 + n))
        shadow = [decay * s + (1 - decay) * p.detach() for s, p in zip(shadow, params, strict=True)]
        assert ema.num_updates == n
        for s, t in zip(ema.shadow_params, shadow, strict=True):
            torch.testing.assert_close(s, t, rtol=1e-5, atol=1e-6)


def test_decay_saturates_and_fixed_decay_without_counter():
    ema = ExponentialMovingAverage(_params((2,)), decay=0.995)
    ema.num_updates = 5000
    assert ema.current_decay() == 0.995
    ema.num_updates = 0
    assert ema.current_decay() == pytest.approx(2 / 11)
    fixed = ExponentialMovingAverage(_params((2,)), decay=0.9, use_num_updates=False)
    assert fixed.current_decay() == 0.9 and fixed.num_updates is None


def test_store_copy_restore_and_context_manager():
    params = _params((4,))
    raw = params[0].detach().clone()
    ema = ExponentialMovingAverage(params)
    ema.shadow_params[0].fill_(7.0)
    with ema.average_parameters():
        assert torch.all(params[0] == 7.0)
    torch.testing.assert_close(params[0].detach(), raw)
    ema.store()
    ema.copy_to()
    assert torch.all(params[0] == 7.0)
    ema.restore()
    torch.testing.assert_close(params[0].detach(), raw)


def test_state_dict_round_trip_upstream_format():
    params = _params((2, 2), (3,))
    ema = ExponentialMovingAverage(params)
    ema.update()
    state = ema.state_dict()
    assert set(state) == {"decay", "num_updates", "shadow_params", "collected_params"}
    other = ExponentialMovingAverage(_params((2, 2), (3,)))
    other.load_state_dict(state)
    assert other.num_updates == 1 and other.decay == 0.995
    for a, b in zip(other.shadow_params, ema.shadow_params, strict=True):
        torch.testing.assert_close(a, b)


def test_load_state_dict_rejects_wrong_length_and_shape():
    ema = ExponentialMovingAverage(_params((2, 2), (3,)))
    bad = ExponentialMovingAverage(_params((2, 2))).state_dict()
    with pytest.raises(ValueError, match="1 tensors, the expert has 2"):
        ema.load_state_dict(bad)
    bad = ExponentialMovingAverage(_params((2, 2), (4,))).state_dict()
    with pytest.raises(ValueError, match=r"shadow_params\[1\] has shape \(4,\)"):
        ema.load_state_dict(bad)


def test_works_without_gpu_and_keeps_device():
    ema = ExponentialMovingAverage(_params((3,)))
    assert ema.shadow_params[0].device.type == "cpu"
