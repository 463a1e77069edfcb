"""One network's activations at a time, process-wide.

The largest transient of a call is one network's activation buffers: a compiled expert's (50-110 MB at
512 px) or the face detector's full-resolution level (about 100 MB on a 1080p frame). Each is released
after its run, but face detection runs on a decoding thread while the engine scores earlier crops, so
the two would add up beside the resident weights (measured: +100 MB on a faces-mode video). On a small
CPU both compete for the same cores anyway, so taking turns costs little time (docs/performance.md).
"""
from __future__ import annotations

import threading

#: Held while one network runs: an expert (or, with experts side by side, a whole batch) or one image's
#: face detection. Never held while waiting for anything else, so it cannot deadlock.
ACTIVATIONS = threading.Lock()
