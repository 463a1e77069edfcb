"""Keeping a one-shot run small: OS memory tricks for the lean torch engine and for short CLI processes.

Weights that leave memory once used, big activations returned to the OS, CUDA library pages dropped on
a CPU run, and no import of an unused GPU kernel compiler. Why these: `import torch` (CUDA build) and the
seven experts' fp32 weights together already exceed the memory budget of `mffmoe analyze one.jpg`, so a
process that keeps every expert resident cannot meet it (the figures are in docs/performance.md, "Memory").
The loader maps the checkpoint files instead of copying them, so weight pages are clean file-backed pages:
`madvise(MADV_DONTNEED)` drops them from this process after a layer has run, and the next forward pass
faults them back in from the page cache (no disk read, no copy). Nothing is ever written to those pages
(inference only), which is what makes dropping them exact.
"""
from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from mffmoe.config import env

if TYPE_CHECKING:  # torch is not imported here: the CLI imports this module before deciding it needs torch
    import torch
    from torch import nn

MADV_DONTNEED = 4
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
PAGE = mmap.PAGESIZE

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return _libc


def skip_unused_imports() -> None:
    """Stop `triton` (a GPU kernel compiler, large when resident) from being imported as a side effect of
    `timm -> torchvision.ops -> torch._dynamo`. mffmoe never compiles kernels, so nothing is lost; call it
    before timm is imported, in one-shot processes only. MFFMOE_ALLOW_TRITON=1 turns it off."""
    if env().allow_triton or "triton" in sys.modules:
        return
    sys.modules["triton"] = None  # type: ignore[assignment]  # makes `import triton` raise ImportError


def return_large_blocks_to_os(threshold: int = 1 << 20) -> bool:
    """Serve allocations above `threshold` bytes from their own mmap, so freed activations go back to the
    OS at once (glibc otherwise raises its threshold to 32 MB and keeps freed blocks on the heap), and
    keep to one malloc arena (per-thread arenas each hold on to their own freed memory)."""
    libc = _c()
    if libc is None:
        return False
    libc.mallopt(M_ARENA_MAX, 1)
    return libc.mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1


def drop_file_pages(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Drop this process's resident pages of the files at `paths` (read-only uses only: the pages are
    unmodified file pages, read back from the page cache if touched again). Returns bytes of mappings."""
    libc = _c()
    if libc is None:
        return 0
    total = 0
    for lo, hi in file_mappings(paths):
        if libc.madvise(lo, hi - lo, MADV_DONTNEED) == 0:
            total += hi - lo
    return total


@contextlib.contextmanager
def dropping(paths: Sequence[str | os.PathLike[str]], every: float = 0.005) -> Iterator[None]:
    """While the block runs, drop this process's pages of the files at `paths` every `every` seconds
    (`drop_file_pages`), and once more at its end. For compiling an OpenVINO expert from its cached blob:
    the blob is read once, front to back, while its weights are re-laid out into memory of their own, so
    without this the whole blob (70-160 MB) is resident beside them by the end."""
    done = threading.Event()

    def loop() -> None:
        while not done.wait(every):
            drop_file_pages(paths)

    worker = threading.Thread(target=loop, name="mffmoe-drop-pages", daemon=True)
    worker.start()
    try:
        yield
    finally:
        done.set()
        worker.join()
        drop_file_pages(paths)


def trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc keeps them otherwise)."""
    libc = _c()
    if libc is not None:
        libc.malloc_trim(0)


#: Libraries of torch's CUDA build that a CPU run does not execute after start-up.
CUDA_LIBRARY_MARKERS = ("/nvidia/", "libtorch_cuda", "libc10_cuda", "libcudnn", "libnccl", "libcublas",
                        "libcusparse", "libcufft", "libcurand", "libnvrtc", "libnvJitLink", "libcudart",
                        "libtorch_nvshmem", "libcufile", "libnvjpeg")


def drop_clean_library_pages(markers: Sequence[str] = CUDA_LIBRARY_MARKERS) -> int:
    """Drop this process's resident pages of CUDA libraries on a CPU-only run (torch's CUDA build touches
    them all at start-up). Only mappings that are not writable and hold no private
    (copied-on-write) page are touched, so every dropped page is an unmodified file page that the kernel
    may drop under memory pressure anyway; code that runs later faults its page back in. Returns bytes."""
    libc = _c()
    if libc is None:
        return 0
    dropped = 0
    try:
        with open("/proc/self/smaps") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    current: tuple[int, int, str, str] | None = None
    stats: dict[str, int] = {}

    def flush() -> None:
        nonlocal dropped
        if current is None:
            return
        lo, hi, perms, path = current
        if ("w" not in perms and any(m in path for m in markers) and stats.get("Anonymous", 1) == 0
                and stats.get("Rss", 0) > 0 and libc.madvise(lo, hi - lo, MADV_DONTNEED) == 0):
            dropped += stats["Rss"] * 1024

    for line in lines:
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            flush()
            lo, hi = (int(v, 16) for v in head[0].split("-"))
            current, stats = (lo, hi, head[1], head[5].strip() if len(head) == 6 else ""), {}
        elif ":" in line:
            key, _, rest = line.partition(":")
            value = rest.split()
            if value and value[0].isdigit():
                stats[key] = int(value[0])
    flush()
    return dropped


#: The libraries whose pages a call of a resident OpenVINO process touches and rarely needs again (compiling
#: the face detector's graphs, reading Content Credentials, a codec), for `release_idle`. Not torch's: a
#: torch engine runs them on every call, and faulting them back in would cost more than the call.
IDLE_LIBRARIES = ("/openvino/", "/c2pa/", "/av.libs/", "/pillow.libs/")


def release_idle() -> int:
    """What a finished call leaves behind in a long-lived process (a server, a library caller), given back:
    free heap pages, and the clean pages of IDLE_LIBRARIES that the call touched (40-80 MB, measured).
    Code that runs again faults its pages back in from the page cache, a few milliseconds a call. Returns
    bytes dropped."""
    trim_heap()
    return drop_clean_library_pages(IDLE_LIBRARIES)


def file_mappings(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of `paths` (from /proc/self/maps)."""
    wanted = {os.path.realpath(p) for p in paths}
    if not wanted:
        return []
    names = tuple({os.path.basename(p) for p in wanted})
    out: list[tuple[int, int]] = []
    try:
        with open("/proc/self/maps") as f:
            text = f.read()
    except OSError:
        return []
    # thousands of anonymous mappings (large allocations each get one): look closer only at lines that end
    # in a wanted file's name
    for line in text.splitlines():
        if line.endswith(names):
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5] in wanted:  # the kernel prints resolved paths
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                out.append((lo, hi))
    return out


class WeightPager:
    """Drops a module's file-mapped weight pages after its forward pass (a forward hook per leaf module).

    Only tensors that lie wholly inside a mapping of the checkpoint files are touched; tensors the loader
    had to copy (dtype casts) or an engine re-laid out (channels_last) are anonymous memory and stay.
    The hooks sit on the caller's model, so `remove()` (called by `TorchEngine.close`) takes them off
    again: an engine built later on the same model must not keep paging its weights out.
    """

    def __init__(self, model: nn.Module, files: Sequence[str | os.PathLike[str]]) -> None:
        self.maps = file_mappings(files)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.ranges: dict[nn.Module, list[tuple[int, int]]] = {}
        libc = _c()
        if not self.maps or libc is None:
            return
        for module in model.modules():
            tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
            spans = [r for t in tensors if (r := self._span(t)) is not None]
            if spans:
                self.ranges[module] = spans
                self.handles.append(module.register_forward_hook(self._after_forward))

    @property
    def active(self) -> bool:
        return bool(self.ranges)

    @property
    def mapped_bytes(self) -> int:
        return sum(e - s for spans in self.ranges.values() for s, e in spans)

    def _span(self, t: torch.Tensor) -> tuple[int, int] | None:
        if t.device.type != "cpu" or t.numel() == 0:
            return None
        start = t.data_ptr()
        end = start + t.numel() * t.element_size()
        if not any(lo <= start and end <= hi for lo, hi in self.maps):
            return None
        return start & ~(PAGE - 1), min((end + PAGE - 1) & ~(PAGE - 1),
                                        next(hi for lo, hi in self.maps if lo <= start < hi))

    def _after_forward(self, module: nn.Module, args: object, output: object) -> None:
        self.release(module)

    def release(self, module: nn.Module) -> None:
        """Drop the pages of `module`'s own weights (its forward pass has just used them)."""
        libc = _c()
        if libc is None:
            return
        for s, e in self.ranges.get(module, []):
            libc.madvise(s, e - s, MADV_DONTNEED)

    def release_all(self) -> None:
        """Drop every mapped page of the checkpoint files, including neighbours that the kernel mapped in
        along with a faulting page (fault-around, large folios) after their own layer had released them."""
        libc = _c()
        if libc is not None and self.ranges:
            for lo, hi in self.maps:
                libc.madvise(lo, hi - lo, MADV_DONTNEED)

    def remove(self) -> None:
        """Take the hooks off the model (pages dropped so far simply fault back in when next read)."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
