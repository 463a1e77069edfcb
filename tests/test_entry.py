"""The `mffmoe` command re-executes itself once with glibc's huge-page tunable (mffmoe/_entry.py)."""
from __future__ import annotations

import sys

import pytest

from mffmoe import _entry


def test_reexecutes_once_with_the_tunable(monkeypatch):
    calls = []
    monkeypatch.setattr(_entry, "_huge_pages_available", lambda: True)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(_entry.os, "execv", lambda exe, argv: calls.append((exe, argv)))
    monkeypatch.delenv("MFFMOE_HUGEPAGES", raising=False)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    _entry.with_huge_pages()
    assert calls == [(sys.executable, [sys.executable, *sys.orig_argv[1:]])]
    assert _entry.os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    _entry.with_huge_pages()  # the re-executed process: set already, so it goes on
    assert len(calls) == 1


@pytest.mark.parametrize("why", ["off", "no_thp"])
def test_no_reexecution_when_off_or_useless(monkeypatch, why):
    calls = []
    monkeypatch.setattr(_entry.os, "execv", lambda exe, argv: calls.append(argv))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(_entry, "_huge_pages_available", lambda: why != "no_thp")
    if why == "off":
        monkeypatch.setenv("MFFMOE_HUGEPAGES", "0")
    _entry.with_huge_pages()
    assert calls == [] and "GLIBC_TUNABLES" not in _entry.os.environ


def test_the_installed_command_still_works_after_reexecuting():
    import subprocess
    from pathlib import Path

    exe = Path(sys.executable).with_name("mffmoe")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "analyze" in out.stdout
