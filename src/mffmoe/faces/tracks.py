"""Face tracks: which detected faces in the sampled frames of a video belong to the same person.

Faces are grouped frame by frame, in sampling order, by matching each frame's faces to the active tracks:

- A track keeps its last box, a constant-velocity prediction of its box (velocity from its last two
  observations, per sampled-frame step; a track seen once is predicted to stay put) and a running mean
  appearance (exponential, re-normalised after each update).
- The cost of giving face f to track t is
  ``w_pos * (1 - IoU(pred_t, box_f)) + w_pos2 * dist(pred_t, box_f) / size + w_app * (1 - cos(app_t, app_f))``
  with ``dist`` the distance between box centres and ``size`` the largest side of the two boxes, so that the cost
  does not depend on the resolution of the video.
- A pair is forbidden when the face's centre is more than ``gate`` box sizes from the prediction, unless the two
  appearances are very close (cosine >= ``app_gate``): people do not jump across the frame between two samples.
- Crossing: when a track's predicted or last box overlaps another active track's (IoU > ``ambiguous_iou``), or the
  face's box overlaps another face of the frame, position cannot tell who is who; the position terms are then
  scaled by ``ambiguous_pos_scale`` so that appearance decides. Appearance is not updated from a face that overlaps
  another face of its frame (its crop may show part of the other person).
- Leaving a face unmatched (it starts a new person) costs ``new_track_cost``; the assignment minimising the total
  cost is found exactly (depth-first search with pruning over all assignments) when at most ``exact_limit`` tracks
  and faces meet, else greedily by lowest cost. Faces of one frame therefore never share a person. A pair costing
  more than ``new_track_cost`` is never matched, which also bounds how far the appearance exception to the gate
  reaches (with the default weights, about 3 box sizes).
- A track not seen for more than ``max_gap`` sampled frames ends: a face seen after that starts a new person.

Where it fails:

- Two people who look alike AND cross while occluding each other: the appearance that should settle the crossing
  cannot, and position is ambiguous by construction, so their identities may be swapped.
- A person absent for more than ``max_gap`` sampled frames (turned away, occluded, out of shot) comes back as a new
  person; nothing re-identifies ended tracks.
- Sparse sampling: when a person moves more than ``gate`` box sizes between two samples (fast motion, a cut, a
  camera pan) the pair is forbidden unless appearance is very close, and a new person starts.
- Constant velocity is a poor guess for erratic motion; appearance then carries the match, and it is a small
  colour-and-layout descriptor, not a face-recognition embedding: strong lighting changes, profile turns or heavy
  blur lower its similarity.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mffmoe.faces.base import Box, iou

_HIST_BINS = 8
_CHROMA_R = (0.15, 0.75)  # r = R / (R + G + B): skin and most scenes fall well inside
_CHROMA_G = (0.15, 0.50)  # g = G / (R + G + B)
_THUMB = 8


@dataclass(frozen=True)
class TrackInput:
    """One detected face: the sampled frame it is in, its box and its look."""

    frame: int  # position of the sampled frame (0, 1, 2, ... in sampling order)
    box: Box  # left, top, right, bottom in pixels
    appearance: np.ndarray  # 1-D float vector describing the face's look (see `appearance()`)


def _area_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Mean of each of size x size cells (integral image): no resampling library, any crop size >= 1 pixel."""
    h, w = img.shape[:2]
    s = np.zeros((h + 1, w + 1) + img.shape[2:], dtype=np.float64)
    s[1:, 1:] = img.astype(np.float64).cumsum(0).cumsum(1)
    ys = np.floor(np.linspace(0, h, size + 1)).astype(int)
    xs = np.floor(np.linspace(0, w, size + 1)).astype(int)
    y0, x0 = ys[:-1], xs[:-1]
    y1, x1 = np.maximum(ys[1:], y0 + 1), np.maximum(xs[1:], x0 + 1)
    y0, x0 = np.minimum(y0, h - 1), np.minimum(x0, w - 1)
    tot = s[y1][:, x1] - s[y0][:, x1] - s[y1][:, x0] + s[y0][:, x0]
    area = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).astype(np.float64)
    return tot / (area[..., None] if tot.ndim == 3 else area)


def appearance(crop_rgb: np.ndarray) -> np.ndarray:
    """A small, lighting-tolerant descriptor of a face crop (HxWx3 uint8), L2-normalised, deterministic.

    Two halves of equal weight: a joint 8x8 histogram of rg chromaticity (colour without brightness, so a global
    gain in lighting leaves it unchanged; square-rooted so a dominant colour does not drown the rest) over the crop
    resized to 32x32, dark pixels left out (their chroma is noise); and an 8x8 grey thumbnail normalised to zero
    mean and unit std (layout of the face, tolerant to brightness and contrast).
    """
    crop = np.asarray(crop_rgb)
    if crop.ndim != 3 or crop.shape[2] < 3 or crop.shape[0] < 1 or crop.shape[1] < 1:
        raise ValueError(f"appearance() needs an HxWx3 crop, got shape {crop.shape}")
    rgb = _area_resize(crop[..., :3], 32)
    tot = rgb.sum(axis=2)
    keep = tot > 3 * 20.0
    hist = np.zeros((_HIST_BINS, _HIST_BINS), dtype=np.float64)
    if keep.any():
        r = rgb[..., 0][keep] / tot[keep]
        g = rgb[..., 1][keep] / tot[keep]
        ri = np.clip(((r - _CHROMA_R[0]) / (_CHROMA_R[1] - _CHROMA_R[0]) * _HIST_BINS).astype(int), 0, _HIST_BINS - 1)
        gi = np.clip(((g - _CHROMA_G[0]) / (_CHROMA_G[1] - _CHROMA_G[0]) * _HIST_BINS).astype(int), 0, _HIST_BINS - 1)
        np.add.at(hist, (ri, gi), 1.0)
    hist = np.sqrt(hist.ravel())
    hist /= max(float(np.linalg.norm(hist)), 1e-12)
    grey = _area_resize(rgb.mean(axis=2), _THUMB).ravel()
    grey = grey - grey.mean()
    grey /= max(float(np.linalg.norm(grey)), 1e-12)
    out = np.concatenate([hist, grey]) / np.sqrt(2.0)
    return out / max(float(np.linalg.norm(out)), 1e-12)


def _as_box(b: Box) -> Box:
    left, top, right, bottom = (float(v) for v in b)
    return left, top, right, bottom


def _centre(b: Box) -> tuple[float, float]:
    return (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0


def _size(a: Box, b: Box) -> float:
    """The largest side of the two boxes: distances are measured in face sizes, not pixels."""
    return max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1], 1e-6)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass
class _Track:
    pid: int
    last: Box
    last_frame: int
    app: np.ndarray
    prev: Box | None = None
    prev_frame: int = -1
    seen: list[int] = field(default_factory=list)

    def predict(self, frame: int) -> Box:
        """Constant velocity from the last two observations, per sampled-frame step."""
        if self.prev is None or self.last_frame <= self.prev_frame:
            return self.last
        k = (frame - self.last_frame) / (self.last_frame - self.prev_frame)
        (l0, t0, r0, b0), (l1, t1, r1, b1) = self.prev, self.last
        return l1 + k * (l1 - l0), t1 + k * (t1 - t0), r1 + k * (r1 - r0), b1 + k * (b1 - b0)


def _assign_exact(cost: np.ndarray, new_cost: float) -> list[int]:
    """Minimum total cost, each face to a distinct track or to none (-1, costing new_cost): exhaustive with pruning.

    Faces are taken in order and tracks tried in index order with strict improvement, so ties resolve the same way
    every time.
    """
    n_faces, n_tracks = cost.shape
    best: list[float] = [float("inf")]
    best_map: list[list[int]] = [[-1] * n_faces]
    # Lower bound of what the remaining faces cost at least, to prune.
    row_min = np.minimum(cost.min(axis=1) if n_tracks else np.full(n_faces, np.inf), new_cost)
    rest = np.concatenate([np.cumsum(row_min[::-1])[::-1], [0.0]])
    cur: list[int] = []
    used = [False] * n_tracks

    def dfs(i: int, acc: float) -> None:
        if acc + rest[i] >= best[0] - 1e-12:
            return
        if i == n_faces:
            best[0] = acc
            best_map[0] = list(cur)
            return
        for t in range(n_tracks):
            c = cost[i, t]
            if not used[t] and np.isfinite(c) and c < new_cost:
                used[t] = True
                cur.append(t)
                dfs(i + 1, acc + float(c))
                cur.pop()
                used[t] = False
        cur.append(-1)
        dfs(i + 1, acc + new_cost)
        cur.pop()

    dfs(0, 0.0)
    return best_map[0]


def _assign_greedy(cost: np.ndarray, new_cost: float) -> list[int]:
    """Lowest cost pair first; ties by (face, track) index so the result is deterministic."""
    n_faces, n_tracks = cost.shape
    pairs = sorted(
        (float(cost[i, t]), i, t)
        for i in range(n_faces)
        for t in range(n_tracks)
        if np.isfinite(cost[i, t]) and cost[i, t] < new_cost
    )
    out = [-1] * n_faces
    used: set[int] = set()
    for _, i, t in pairs:
        if out[i] < 0 and t not in used:
            out[i] = t
            used.add(t)
    return out


def group_persons(
    faces: Sequence[TrackInput],
    *,
    max_gap: int = 5,
    w_pos: float = 1.0,
    w_pos2: float = 0.5,
    w_app: float = 2.0,
    gate: float = 2.5,
    app_gate: float = 0.95,
    ambiguous_iou: float = 0.3,
    ambiguous_pos_scale: float = 0.1,
    new_track_cost: float = 2.5,
    momentum: float = 0.8,
    exact_limit: int = 7,
) -> list[int]:
    """A person id (0, 1, 2, ... in order of first appearance) for each input face, same order as input.

    Faces in the same frame never share a person. See the module docstring for the method and where it fails.
    """
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    n = len(faces)
    result = [-1] * n
    by_frame: dict[int, list[int]] = {}
    for idx, f in enumerate(faces):
        by_frame.setdefault(int(f.frame), []).append(idx)
    tracks: list[_Track] = []
    next_pid = 0
    for frame in sorted(by_frame):
        # Tracks unseen for more than max_gap sampled frames end.
        tracks = [t for t in tracks if frame - t.last_frame - 1 <= max_gap]
        idxs = by_frame[frame]
        boxes: list[Box] = [_as_box(faces[i].box) for i in idxs]
        apps = [_unit(faces[i].appearance) for i in idxs]
        preds = [t.predict(frame) for t in tracks]
        # Crossing: a track whose predicted or last box overlaps another's is ambiguous by position.
        amb_track = [
            any(
                max(iou(preds[a], preds[b]), iou(tracks[a].last, tracks[b].last)) > ambiguous_iou
                for b in range(len(tracks))
                if b != a
            )
            for a in range(len(tracks))
        ]
        amb_face = [
            any(iou(boxes[a], boxes[b]) > ambiguous_iou for b in range(len(boxes)) if b != a) for a in range(len(boxes))
        ]
        cost = np.full((len(idxs), len(tracks)), np.inf)
        for i, (box, app) in enumerate(zip(boxes, apps, strict=True)):
            cf = _centre(box)
            for j, (trk, pred) in enumerate(zip(tracks, preds, strict=True)):
                cp = _centre(pred)
                dist = float(np.hypot(cf[0] - cp[0], cf[1] - cp[1])) / _size(pred, box)
                cos = float(np.dot(trk.app, app)) if trk.app.shape == app.shape else 0.0
                if dist > gate and cos < app_gate:
                    continue
                scale = ambiguous_pos_scale if (amb_track[j] or amb_face[i]) else 1.0
                pos = w_pos * (1.0 - iou(pred, box)) + w_pos2 * dist
                cost[i, j] = scale * pos + w_app * (1.0 - cos)
        if len(idxs) <= exact_limit and len(tracks) <= exact_limit:
            match = _assign_exact(cost, new_track_cost)
        else:
            match = _assign_greedy(cost, new_track_cost)
        for i, j in enumerate(match):
            box, app = boxes[i], apps[i]
            if j < 0:
                trk = _Track(pid=next_pid, last=box, last_frame=frame, app=app)
                next_pid += 1
                tracks.append(trk)
            else:
                trk = tracks[j]
                trk.prev, trk.prev_frame = trk.last, trk.last_frame
                trk.last, trk.last_frame = box, frame
                if not amb_face[i] and trk.app.shape == app.shape:
                    trk.app = _unit(momentum * trk.app + (1.0 - momentum) * app)
            result[idxs[i]] = trk.pid
    # Ids in order of first appearance in the input (the same as frame order when the input is sorted by frame).
    order: dict[int, int] = {}
    return [order.setdefault(pid, len(order)) for pid in result]
