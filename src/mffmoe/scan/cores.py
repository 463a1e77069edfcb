"""Core groups for model replicas: each CPU replica pins itself to cores no other replica on the node
holds, so N replicas on a node share its cores instead of each planning threads for all of them (the
engines size their thread pools from the process's CPU affinity)."""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path

REGISTRY = Path(tempfile.gettempdir()) / "mffmoe-scan-cores.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_cores(n: int, registry: Path = REGISTRY) -> list[int] | None:
    """Pin this process to `n` cores not claimed by another live process on this node. Returns them, or
    None (and pins nothing) where affinity is unsupported or fewer than `n` cores are free."""
    if not hasattr(os, "sched_setaffinity") or n < 1:
        return None
    available = sorted(os.sched_getaffinity(0))
    with open(registry, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        try:
            claims = json.loads(f.read() or "{}")
        except ValueError:
            claims = {}
        claims = {pid: cores for pid, cores in claims.items() if pid.isdigit() and _alive(int(pid))}
        claims.pop(str(os.getpid()), None)
        taken = {c for cores in claims.values() for c in cores}
        free = [c for c in available if c not in taken]
        mine = free[:n] if len(free) >= n else None
        if mine:
            claims[str(os.getpid())] = mine
        f.seek(0)
        f.truncate()
        f.write(json.dumps(claims))
    if mine:
        os.sched_setaffinity(0, mine)
    return mine
