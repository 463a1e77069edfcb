"""Shared helpers of the training/evaluation tests: the CLI in-process, and small generated data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mffmoe.testing.checkpoints import TINY_ROSTER

TINY = ",".join(TINY_ROSTER)


def cli_app():
    """`mffmoe`'s Typer app (every command is registered on import)."""
    from mffmoe.cli import app

    return app


def run_cli(*args: str, expect: int = 0):
    result = CliRunner().invoke(cli_app(), [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr)
    return result


def said(result) -> str:
    """stderr with rich's line wrapping undone, for matching messages."""
    return " ".join(result.stderr.split())


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def one_thread():
    """Other test processes share the 2 cores: one intra-op thread is far steadier than two that
    spin-wait for each other (an epoch took 1 s or 40 s with two, by the neighbours' load)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
