"""Which face is "the person": face selectors, tracks across frames and scene cuts, source faces.

A shot may hold several people; only one of them is swapped. The operator names that person
with a *face selector* (CLI ``--face``):

``largest``
    The largest face (the track with the largest mean box area) of the first shot segment
    (between scene cuts) in which a face is found.
``index:N``
    The N-th face by box area (0 = largest) on the first frame where faces appear, then
    followed along its track.
``reference:PHOTO``
    In every segment, the tracks whose embedding is within ``threshold`` of the reference
    photo's embedding, nearest first; none → the segment stays empty (-1).

For ``largest`` and ``index`` the chosen track's embedding in that first segment is *the
person* (the anchor). In the first segment the other tracks within ``threshold`` of it are the
person too (fragments of the same face after a track break). In every later segment (after a
cut) a track is the person only when it lies within :data:`REID_MAX_DISTANCE` of the anchor
(nearest first); a segment where none does — the performer is absent, or only someone else is
there, however large — stays empty (-1): its frames pass through unchanged
(:func:`segments_without_person` lists them). So does a later segment none of whose tracks has
an embedding: the person cannot be confirmed there, and swapping the wrong person is worse than
leaving a shot untouched. Only where the first segment's person has no embedding (no anchor)
does geometry decide in every segment (the largest track, or the N-th face by area on the
segment's first frame with faces), as the only information there is.

Linking (:func:`link_tracks`) is deliberately cautious: where two faces overlap so much that
the box match is ambiguous (people crossing, one in front of the other), tracks are *broken*
and new ids begin, rather than guessing and silently swapping identities. :func:`choose_track`
then stitches the chosen person's fragments together again by embedding. So every track needs
an embedding sample at its first appearance — which :func:`sample_frames_for_embedding`
provides — for that stitching to work: a track without an embedding is the person only as the
first segment's geometric choice (or, where the person has no embedding at all, each segment's).
The segment stage embeds every face on the frames that may start a segment (and some more), so
the first segment's person and each later segment's faces have one.

Embeddings are dlib's 128-D descriptors (:mod:`recast.models.identity`); distances are
Euclidean, same person below 0.6. Everything here works on arrays only: the caller detects
faces, computes the few embeddings asked for, and passes them in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from recast.errors import AmbiguousFaceError, NoFaceError, UsageError
from recast.models.face import DetectedFace

__all__ = [
    "FaceSelector",
    "parse_face_selector",
    "link_tracks",
    "choose_track",
    "sample_frames_for_embedding",
    "mean_track_embeddings",
    "describe_faces",
    "require_single_source_face",
    "segment_bounds",
    "segments_without_person",
]

#: dlib's same-person threshold on the Euclidean distance of two descriptors.
SAME_PERSON_THRESHOLD = 0.6
#: How much nearer than :data:`SAME_PERSON_THRESHOLD` a face after a cut must be to the chosen
#: person's embedding to be that person. dlib's 0.6 is the bound where same and different people
#: overlap least on average, and look-alikes reach 0.5-0.6; within a shot the geometry already
#: says who is who, but after a cut the embedding alone decides, and taking someone else (the
#: wrong person swapped) is worse than leaving a shot untouched (listed in the summary). On the
#: shared test clips the same person lies at 0.14-0.33 within a clip and at 0.37-0.46 across the
#: cuts of ghost_nggyup.mp4 (the singer, lit and framed differently), different people at 0.65-0.92.
REID_MARGIN = 0.1
#: The largest distance to the chosen person's embedding at which a face after a cut is that person.
REID_MAX_DISTANCE = SAME_PERSON_THRESHOLD - REID_MARGIN


# ================================================================================================
# selector
# ================================================================================================
@dataclass(frozen=True)
class FaceSelector:
    """A parsed face selector (see the module docstring for what each kind means).

    ``kind`` is ``'largest'``, ``'index'`` (with ``index`` >= 0) or ``'reference'`` (with
    ``reference_path``, the photo of the person to find; reading it is the caller's job).
    """

    kind: str
    index: int | None = None
    reference_path: str | None = None

    def __str__(self) -> str:
        if self.kind == "index":
            return f"index:{self.index}"
        if self.kind == "reference":
            return f"reference:{self.reference_path}"
        return self.kind


_INDEX = re.compile(r"^index:(\d+)$")
_SELECTOR_HELP = "'largest', 'index:N' (N >= 0, 0 = largest face) or 'reference:PHOTO'"


def parse_face_selector(text: str) -> FaceSelector:
    """Parse ``"largest"``, ``"index:N"`` (N >= 0) or ``"reference:PHOTO"``.

    Surrounding whitespace is ignored; the keywords are case-sensitive (as CLI choices are).
    Anything else raises :class:`~recast.errors.UsageError` naming the text.
    """
    if not isinstance(text, str):
        raise UsageError(f"face selector {text!r} is not {_SELECTOR_HELP}")
    s = text.strip()
    if s == "largest":
        return FaceSelector("largest")
    m = _INDEX.match(s)
    if m:
        return FaceSelector("index", index=int(m.group(1)))
    if s.startswith("reference:"):
        path = s[len("reference:"):].strip()
        if path:
            return FaceSelector("reference", reference_path=path)
        raise UsageError(f"face selector {text!r}: 'reference:' needs the path of a photo of the person")
    raise UsageError(f"face selector {text!r} is not {_SELECTOR_HELP}")


# ================================================================================================
# tracks
# ================================================================================================
def _as_boxes(b: np.ndarray | Sequence) -> np.ndarray:
    a = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 4))
    if a.ndim != 2 or a.shape[1] != 4:
        raise UsageError(f"boxes must be (K, 4) arrays of x0, y0, x1, y1, got shape {a.shape}")
    return a


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of boxes x0, y0, x1, y1."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def link_tracks(
    boxes_per_frame: Sequence[np.ndarray],
    *,
    cuts: Sequence[int] = (),
    iou_min: float = 0.3,
    max_gap: int = 5,
) -> list[np.ndarray]:
    """Track ids (0, 1, 2, ... in order of first appearance) for every detected face.

    ``boxes_per_frame[t]`` is a (K_t, 4) array of boxes x0, y0, x1, y1 on frame t (K_t may be
    0); the result has one (K_t,) int array per frame. Frame t's faces are matched to the tracks
    seen on the last ``max_gap + 1`` frames by IoU with each track's last box (Hungarian
    assignment on 1 - IoU, pairs below ``iou_min`` refused). So a face missed by the detector
    for up to ``max_gap`` frames keeps its id when it comes back near where it was; a face
    that does not match starts a new track.

    ``cuts`` are the frames that start a new shot: no track continues across one.

    Ambiguity breaks tracks instead of guessing: when a face overlaps (IoU >= ``iou_min``)
    two live tracks, or a track overlaps two faces — people crossing, one head in front of
    another — the tracks involved end and the faces start new ones. Identity across such a
    break is the embedding's job (:func:`choose_track`), which cannot be fooled by overlap.
    Frame indices are positions in ``boxes_per_frame``: when detection ran on every k-th
    frame, pass cuts in those positions too.
    """
    if not 0.0 < iou_min <= 1.0:
        raise UsageError(f"iou_min must be in (0, 1], got {iou_min}")
    if max_gap < 0:
        raise UsageError(f"max_gap must be >= 0, got {max_gap}")
    cut_set = {int(c) for c in cuts}
    next_id = 0
    # live tracks: id -> (last box, last frame)
    live: dict[int, tuple[np.ndarray, int]] = {}
    out: list[np.ndarray] = []
    for t, raw in enumerate(boxes_per_frame):
        boxes = _as_boxes(raw)
        if t in cut_set:
            live.clear()
        # a track unseen for more than max_gap frames is over
        live = {k: v for k, v in live.items() if t - v[1] <= max_gap + 1}
        ids = np.full(len(boxes), -1, dtype=np.int64)
        if live and len(boxes):
            keys = list(live)
            last = np.stack([live[k][0] for k in keys])
            iou = _iou_matrix(last, boxes)
            ok = iou >= iou_min
            rows, cols = linear_sum_assignment(1.0 - iou)
            for r, c in zip(rows, cols):
                if not ok[r, c]:
                    continue
                # ambiguous: this face also overlaps another track, or the track another face
                if ok[:, c].sum() > 1 or ok[r, :].sum() > 1:
                    continue
                ids[c] = keys[r]
            # a track involved in an ambiguity ends here, even where it was not assigned, so
            # that it cannot pick up the other person's face a few frames later
            for r in range(len(keys)):
                cols_r = np.flatnonzero(ok[r])
                if len(cols_r) and keys[r] not in ids and (len(cols_r) > 1 or ok[:, cols_r].sum() > 1):
                    live.pop(keys[r], None)
        for c in range(len(boxes)):
            if ids[c] < 0:
                ids[c] = next_id
                next_id += 1
            live[int(ids[c])] = (boxes[c], t)
        out.append(ids)
    return out


def segment_bounds(n_frames: int, cuts: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Shot segments ``[start, end)`` of ``n_frames`` frames split at ``cuts``."""
    edges = sorted({0, n_frames, *(int(c) for c in cuts if 0 < int(c) < n_frames)})
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def sample_frames_for_embedding(track_ids: Sequence[np.ndarray], every: int = 12) -> list[tuple[int, int]]:
    """(frame, face_index) pairs whose embeddings the caller should compute.

    Each track is sampled at its first appearance and then again once at least ``every``
    frames have passed since its previous sample: a few embeddings per track (~80 ms each on
    a CPU) instead of one per frame. Short tracks get exactly one. Sorted by frame.
    """
    if every < 1:
        raise UsageError(f"every must be >= 1, got {every}")
    last: dict[int, int] = {}
    out: list[tuple[int, int]] = []
    for t, ids in enumerate(track_ids):
        for i, tid in enumerate(np.asarray(ids).ravel().tolist()):
            if tid < 0:
                continue
            if tid not in last or t - last[tid] >= every:
                last[tid] = t
                out.append((t, i))
    return out


def mean_track_embeddings(
    samples: Sequence[tuple[int, int]],
    embeddings: Sequence[np.ndarray | None] | Mapping[tuple[int, int], np.ndarray | None],
    track_ids: Sequence[np.ndarray],
    *,
    threshold: float = SAME_PERSON_THRESHOLD,
) -> dict[int, np.ndarray]:
    """Track id -> mean embedding over that track's samples.

    ``embeddings[k]`` is the descriptor of ``samples[k]`` or None where it could not be computed
    (box off the image, say); a mapping ``{(frame, face_index): descriptor}`` is accepted too
    (missing keys count as None). ``track_ids`` (from :func:`link_tracks`) says which track each
    sample belongs to. With three or more samples, those farther than ``threshold`` from the
    element-wise median are left out first, so one bad chip (motion blur, a hand over the face)
    does not drag the mean away from the person.
    """
    if isinstance(embeddings, Mapping):
        embeddings = [embeddings.get((int(t), int(i))) for t, i in samples]
    if len(samples) != len(embeddings):
        raise UsageError(f"{len(samples)} samples but {len(embeddings)} embeddings")
    per: dict[int, list[np.ndarray]] = {}
    for (t, i), e in zip(samples, embeddings):
        if e is None:
            continue
        tid = int(np.asarray(track_ids[t]).ravel()[i])
        if tid < 0:
            continue
        per.setdefault(tid, []).append(np.asarray(e, dtype=np.float64).ravel())
    out: dict[int, np.ndarray] = {}
    for tid, es in per.items():
        e = np.stack(es)
        if len(e) >= 3:
            med = np.median(e, axis=0)
            keep = np.linalg.norm(e - med, axis=1) < threshold
            if keep.any():
                e = e[keep]
        out[tid] = e.mean(axis=0)
    return out


@dataclass
class _Track:
    tid: int
    frames: list[int]
    faces: list[int]
    areas: list[float]


def _tracks_in(track_ids: Sequence[np.ndarray], boxes: Sequence[np.ndarray], start: int, end: int) -> dict[int, _Track]:
    tracks: dict[int, _Track] = {}
    for t in range(start, end):
        b = _as_boxes(boxes[t])
        ids = np.asarray(track_ids[t]).ravel()
        if len(ids) != len(b):
            raise UsageError(f"frame {t}: {len(ids)} track ids for {len(b)} boxes")
        for i, tid in enumerate(ids.tolist()):
            if tid < 0:
                continue
            area = float(max(0.0, b[i, 2] - b[i, 0]) * max(0.0, b[i, 3] - b[i, 1]))
            tr = tracks.setdefault(tid, _Track(tid, [], [], []))
            tr.frames.append(t)
            tr.faces.append(i)
            tr.areas.append(area)
    return tracks


def _largest(tracks: dict[int, _Track], n_frames: int) -> int:
    # mean over the segment's frames, absent frames counting zero: a one-frame false detection
    # (a large "face" in a brick wall) must not beat the person who is there all along
    return max(tracks.values(), key=lambda tr: (sum(tr.areas) / max(n_frames, 1), len(tr.frames), -tr.tid)).tid


def _nth_at_first_frame(tracks: dict[int, _Track], n: int) -> tuple[int | None, int, int]:
    """(track of the n-th largest face on the first frame with faces, that frame, face count)."""
    first = min(f for tr in tracks.values() for f in tr.frames)
    on_first = [(tr.areas[tr.frames.index(first)], tr.tid) for tr in tracks.values() if first in tr.frames]
    on_first.sort(key=lambda a: (-a[0], a[1]))
    return (on_first[n][1] if n < len(on_first) else None), first, len(on_first)


def choose_track(
    track_ids: Sequence[np.ndarray],
    boxes_per_frame: Sequence[np.ndarray],
    selector: FaceSelector,
    *,
    embeddings: Mapping[int, np.ndarray] | None = None,
    reference_embedding: np.ndarray | None = None,
    threshold: float = SAME_PERSON_THRESHOLD,
    cuts: Sequence[int] = (),
) -> np.ndarray:
    """(F,) int: per frame, the index into that frame's faces of the chosen person, -1 where absent.

    ``track_ids`` and ``boxes_per_frame`` are as from :func:`link_tracks` (pass it the same
    ``cuts``); ``embeddings`` maps track id -> mean descriptor (:func:`mean_track_embeddings`)
    for the tracks that have samples. See the module docstring for what each selector means:
    after a cut, ``largest`` and ``index`` take a track only within ``threshold - REID_MARGIN``
    of the person's embedding learnt in the first segment with faces.

    Within a segment the person may span several tracks (a break at an occlusion or a
    crossing): every track taken is the person, and on a frame where two such faces appear the
    nearer one wins. Without an embedding of the person only the geometric choice (one track per
    segment) is made.

    Raises :class:`~recast.errors.UsageError` for ``index:N`` when the first frame with faces
    has N or fewer faces, and for ``reference`` without ``reference_embedding``.
    """
    n = len(track_ids)
    if len(boxes_per_frame) != n:
        raise UsageError(f"{n} frames of track ids but {len(boxes_per_frame)} frames of boxes")
    emb = {int(k): np.asarray(v, np.float64).ravel() for k, v in (embeddings or {}).items()}
    if selector.kind == "reference":
        if reference_embedding is None:
            raise UsageError(f"face selector '{selector}' needs the reference photo's embedding")
        anchor: np.ndarray | None = np.asarray(reference_embedding, np.float64).ravel()
    elif selector.kind in ("largest", "index"):
        anchor = None
    else:
        raise UsageError(f"unknown face selector kind {selector.kind!r}")
    reid_max = threshold - REID_MARGIN

    chosen = np.full(n, -1, dtype=np.int64)
    # distance of the chosen face on each frame to the anchor (inf: chosen by geometry)
    chosen_d = np.full(n, np.inf)
    have_first = False

    def take(tr: _Track, d: float) -> None:
        for f, i in zip(tr.frames, tr.faces):
            if chosen[f] < 0 or d < chosen_d[f]:
                chosen[f], chosen_d[f] = i, d

    def take_within(tracks: dict[int, _Track], bound: float) -> None:
        near = sorted((float(np.linalg.norm(emb[tid] - anchor)), tid) for tid in tracks if tid in emb)
        for d, tid in near:
            if d < bound:
                take(tracks[tid], d)

    for start, end in segment_bounds(n, cuts):
        tracks = _tracks_in(track_ids, boxes_per_frame, start, end)
        if not tracks:
            continue
        if selector.kind == "reference":
            take_within(tracks, threshold)  # nobody like the photo: the segment stays empty
            continue
        if not have_first:
            # the first segment with faces: choose by geometry, then learn the person's face
            if selector.kind == "largest":
                primary: int | None = _largest(tracks, end - start)
            else:
                primary, frame, count = _nth_at_first_frame(tracks, int(selector.index or 0))
                if primary is None:
                    raise UsageError(
                        f"face selector '{selector}': the first frame with faces (frame {frame}) has "
                        f"{count} face{'s' if count != 1 else ''}; choose N from 0 to {count - 1}"
                    )
            have_first = True
            anchor = emb.get(primary)
            take(tracks[primary], 0.0 if anchor is not None else np.inf)
            if anchor is not None:
                # within the shot the geometry has said who the person is: fragments of that face
                # (a track broken at an occlusion) need only the same-person bound
                take_within(tracks, threshold)
            continue
        if anchor is not None:
            # after a cut only the face decides, with a margin (REID_MARGIN): no track near enough
            # (someone else, however large, or no embedding to tell) leaves the segment untouched
            take_within(tracks, reid_max)
        elif selector.kind == "largest":
            take(tracks[_largest(tracks, end - start)], np.inf)  # no anchor: geometry alone
        else:
            nth, _, _ = _nth_at_first_frame(tracks, int(selector.index or 0))
            if nth is not None:
                take(tracks[nth], np.inf)
    return chosen


def segments_without_person(chosen: np.ndarray, cuts: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Shot segments ``[start, end)`` (split at ``cuts``) on none of whose frames the chosen
    person is (``chosen`` from :func:`choose_track`, -1 where absent): the segments whose frames
    pass through unchanged — the person is not there, or (before any face) nobody is."""
    c = np.asarray(chosen).ravel()
    return [(s, e) for s, e in segment_bounds(len(c), cuts) if not (c[s:e] >= 0).any()]


# ================================================================================================
# source photos
# ================================================================================================
def pick_chosen(per_slot: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Per frame, the chosen face's entry of ``per_slot`` (frames, slots, ...): ``chosen[f]`` is the
    slot, -1 where the person is absent; absent frames hold NaN (float arrays) or 0 (integers)."""
    per_slot = np.asarray(per_slot)
    chosen = np.asarray(chosen)
    fill = np.nan if per_slot.dtype.kind == "f" else 0
    out = np.full((len(chosen),) + per_slot.shape[2:], fill, dtype=per_slot.dtype)
    idx = np.flatnonzero(chosen >= 0)
    out[idx] = per_slot[idx, chosen[idx]]
    return out


def describe_faces(faces: Sequence[DetectedFace]) -> str:
    """One line listing faces by box area, largest first, numbered as ``index:N`` counts them.

    e.g. ``"3 faces: #0 (412,80)-(632,340) 220x260 px, #1 ..."``.
    """
    ranked = sorted(faces, key=lambda f: f.area, reverse=True)
    if not ranked:
        return "no faces"
    parts = []
    for k, f in enumerate(ranked):
        x0, y0, x1, y1 = (int(v) for v in f.box)
        parts.append(f"#{k} ({x0},{y0})-({x1},{y1}) {x1 - x0}x{y1 - y0} px")
    return f"{len(ranked)} face{'s' if len(ranked) != 1 else ''}: " + ", ".join(parts)


def require_single_source_face(faces: Sequence[DetectedFace], selector_text: str | None, role_name: str) -> DetectedFace:
    """The one face of a source photo that the operator means.

    No face → :class:`~recast.errors.NoFaceError`. One face and no selector → that face.
    Several and no selector → :class:`~recast.errors.AmbiguousFaceError` listing them with
    their boxes and saying how to choose (``--source-face index:N``). ``selector_text``
    ``'largest'`` or ``'index:N'`` picks by box area (N out of range →
    :class:`~recast.errors.UsageError` naming N and the count); ``'reference:...'`` makes no
    sense for a source photo and is a usage error too.
    """
    ranked = sorted(faces, key=lambda f: f.area, reverse=True)
    if not ranked:
        raise NoFaceError(f"source '{role_name}': no face found")
    if selector_text is None or not str(selector_text).strip():
        if len(ranked) == 1:
            return ranked[0]
        raise AmbiguousFaceError(
            f"source '{role_name}': {describe_faces(ranked)}; choose one with --source-face index:N"
        )
    sel = parse_face_selector(str(selector_text))
    if sel.kind == "largest":
        return ranked[0]
    if sel.kind == "reference":
        raise UsageError(f"--source-face {selector_text!r}: a source photo takes 'largest' or 'index:N'")
    n = int(sel.index or 0)
    if n >= len(ranked):
        raise UsageError(
            f"--source-face index:{n}: source '{role_name}' has {len(ranked)} "
            f"face{'s' if len(ranked) != 1 else ''} (index 0 to {len(ranked) - 1}): {describe_faces(ranked)}"
        )
    return ranked[n]
