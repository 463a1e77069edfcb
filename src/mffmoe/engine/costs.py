"""What each expert costs, for scheduling (longest first), early exit (cheapest first) and GFLOP/s reports.

FLOPs are counted once per (architecture, input size) by running the expert on the meta device under
`torch.utils.flop_counter` (no weights, no arithmetic: a fraction of a second per architecture, then cached).
Exported graphs record their experts' counts in their manifest, so engines running them never need torch.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence


@functools.lru_cache(maxsize=64)
def expert_gflops(name: str, input_size: int) -> float:
    """Forward GFLOP (2 x multiply-adds of convs and matmuls) of one expert for one image."""
    # it warns (on import) that it cannot count triton kernels when triton is absent or kept out (memory.py)
    logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mffmoe.model.experts import build_expert

    with torch.device("meta"):
        expert = build_expert(name).eval()
        x = torch.empty(1, 3, input_size, input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        expert(x)
    return counter.get_total_flops() / 1e9


def roster_gflops(roster: Sequence[str], input_size: int) -> list[float]:
    return [expert_gflops(name, input_size) for name in roster]


def cheapest_first(costs: Sequence[float]) -> list[int]:
    """Expert indices by ascending cost (ties: roster order), the order early exit runs them in."""
    return sorted(range(len(costs)), key=lambda i: (costs[i], i))
