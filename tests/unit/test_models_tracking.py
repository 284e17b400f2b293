"""Face selectors, track linking, choosing the person across cuts, and source-face errors."""

from __future__ import annotations

import re

import av
import cv2
import numpy as np
import pytest

from recast.errors import AmbiguousFaceError, NoFaceError, UsageError
from recast.models import temporal
from recast.models import tracking as tk
from recast.models.face import FaceAnalyzer
from recast.models.identity import DlibFaceEmbedder, face_distance
from tests.conftest import IMAGES, VIDEOS


def _image(name: str) -> np.ndarray:
    bgr = cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)
    assert bgr is not None, name
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def embedder() -> DlibFaceEmbedder:
    return DlibFaceEmbedder()


# --- selector ------------------------------------------------------------------------------------
def test_parse_face_selector():
    assert tk.parse_face_selector("largest") == tk.FaceSelector("largest")
    assert tk.parse_face_selector(" index:0 ") == tk.FaceSelector("index", index=0)
    assert tk.parse_face_selector("index:12").index == 12
    sel = tk.parse_face_selector("reference:/photos/ann smith.jpg")
    assert sel.kind == "reference" and sel.reference_path == "/photos/ann smith.jpg"
    assert str(sel) == "reference:/photos/ann smith.jpg" and str(tk.parse_face_selector("index:3")) == "index:3"
    for bad in ("", "biggest", "index:", "index:-1", "index:x", "reference:", "Largest", "index:1.5"):
        with pytest.raises(UsageError, match=re.escape(repr(bad))):
            tk.parse_face_selector(bad)


# --- source photos -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def group_faces():
    with FaceAnalyzer(static_images=True, max_faces=8) as fa:
        return fa.detect(_image("insightface_t1.jpg"))


def test_group_photo_source_needs_a_selector(group_faces):
    assert len(group_faces) == 6
    with pytest.raises(AmbiguousFaceError) as ei:
        tk.require_single_source_face(group_faces, None, "cast")
    msg = str(ei.value)
    assert msg.startswith("source 'cast': 6 faces: #0 (")
    assert "--source-face index:N" in msg and "\n" not in msg
    boxes = re.findall(r"#(\d) \((\d+),(\d+)\)-\((\d+),(\d+)\) (\d+)x(\d+) px", msg)
    assert [int(b[0]) for b in boxes] == list(range(6))
    ranked = sorted(group_faces, key=lambda f: f.area, reverse=True)
    for b, f in zip(boxes, ranked):
        x0, y0, x1, y1, w, h = map(int, b[1:])
        assert (x0, y0, x1, y1) == f.box and (w, h) == (x1 - x0, y1 - y0)
    # listed largest first, as index:N counts
    areas = [int(b[5]) * int(b[6]) for b in boxes]
    assert areas == sorted(areas, reverse=True)


def test_group_photo_index_picks_that_face(group_faces):
    ranked = sorted(group_faces, key=lambda f: f.area, reverse=True)
    for n in (0, 2, 5):
        assert tk.require_single_source_face(group_faces, f"index:{n}", "cast") is ranked[n]
    assert tk.require_single_source_face(group_faces, "largest", "cast") is ranked[0]
    with pytest.raises(UsageError, match=r"index:6.*6 faces \(index 0 to 5\)"):
        tk.require_single_source_face(group_faces, "index:6", "cast")
    with pytest.raises(UsageError, match="reference"):
        tk.require_single_source_face(group_faces, "reference:x.jpg", "cast")
    with pytest.raises(UsageError):
        tk.require_single_source_face(group_faces, "index:one", "cast")
    # one face: no selector needed; none: a bad-input error
    assert tk.require_single_source_face(ranked[:1], None, "cast") is ranked[0]
    with pytest.raises(NoFaceError, match="source 'cast': no face"):
        tk.require_single_source_face([], None, "cast")
    assert tk.describe_faces(ranked[:1]).startswith("1 face: #0 (")
    assert tk.describe_faces([]) == "no faces"


# --- linking (synthetic) ---------------------------------------------------------------------------
def _box(cx: float, cy: float, s: float = 100.0) -> list[float]:
    return [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]


def test_link_tracks_gaps_cuts_and_empty_frames():
    frames = []
    for t in range(30):
        b = []
        if t not in (5, 6, 7, 20):  # a person missed for 3 frames, then for 1 (a cut) ...
            b.append(_box(200 + 3 * t, 200))
        if 10 <= t < 25:
            b.append(_box(600, 300, 80))
        frames.append(np.array(b).reshape(-1, 4))
    ids = tk.link_tracks(frames, cuts=[20], max_gap=5)
    a = [ids[t][0] for t in range(20) if t not in (5, 6, 7)]
    assert set(a) == {0}  # kept through the 3-frame gap
    assert ids[10][1] == 1 and all(ids[t][1] == 1 for t in range(10, 20))
    # after the cut: new ids for both, continuous again
    assert ids[21][0] not in (0, 1) and ids[21][1] not in (0, 1)
    assert {int(ids[t][0]) for t in range(21, 30)} == {int(ids[21][0])}
    # a gap longer than max_gap starts a new track
    ids2 = tk.link_tracks(frames, max_gap=2)
    assert ids2[8][0] != ids2[4][0]
    assert [len(x) for x in tk.link_tracks([np.zeros((0, 4)), [], np.zeros((0, 4))])] == [0, 0, 0]
    with pytest.raises(UsageError):
        tk.link_tracks([np.zeros((2, 3))])


def _crossing(n: int = 40):
    """A moves right, B moves left; they cross at t = 20, where only the front face is found."""
    frames, truth = [], []
    for t in range(n):
        xa, xb = 100 + 10 * t, 500 - 10 * t
        if abs(xa - xb) < 60:  # one hides the other: the detector finds one face
            frames.append(np.array([_box(xa, 200)]))
            truth.append(["A"])
        else:
            frames.append(np.array([_box(xa, 200), _box(xb, 205)]))
            truth.append(["A", "B"])
    return frames, truth


def test_crossing_faces_keep_identity_with_embeddings():
    rng = np.random.default_rng(0)
    person = {"A": rng.normal(0, 0.09, 128), "B": rng.normal(0, 0.09, 128)}
    assert face_distance(person["A"], person["B"]) > 1.0
    frames, truth = _crossing()
    ids = tk.link_tracks(frames)
    # ambiguity ends tracks instead of swapping them: no track holds both people
    owner: dict[int, set[str]] = {}
    for t, row in enumerate(ids):
        for i, tid in enumerate(row):
            owner.setdefault(int(tid), set()).add(truth[t][i])
    assert all(len(v) == 1 for v in owner.values()) and len(owner) > 2
    # embeddings per sample: the true person's plus noise
    samples = tk.sample_frames_for_embedding(ids, every=6)
    assert {int(ids[t][i]) for t, i in samples} == set(owner)  # every track gets one
    embs = [person[truth[t][i]] + rng.normal(0, 0.02, 128) for t, i in samples]
    track_emb = tk.mean_track_embeddings(samples, embs, ids)
    for sel in ("largest", "index:1"):  # at t = 0 B is as large as A; index:1 is the second
        chosen = tk.choose_track(ids, frames, tk.parse_face_selector(sel), embeddings=track_emb)
        who = {truth[t][c] for t, c in enumerate(chosen) if c >= 0}
        assert len(who) == 1  # one person throughout, never the other one
    chosen = tk.choose_track(ids, frames, tk.FaceSelector("index", index=0), embeddings=track_emb)
    first = truth[0][int(chosen[0])]
    assert all(truth[t][c] == first for t, c in enumerate(chosen) if c >= 0)
    assert sum(c >= 0 for c in chosen) == sum(first in tr for tr in truth)  # every frame with that person
    # the same without embeddings follows only the first track: it stops at the crossing
    geo = tk.choose_track(ids, frames, tk.FaceSelector("index", index=0))
    assert (geo >= 0).sum() < (chosen >= 0).sum()
    # reference: B's photo picks B wherever B is visible, -1 elsewhere
    ref = person["B"] + rng.normal(0, 0.02, 128)
    rb = tk.choose_track(ids, frames, tk.FaceSelector("reference", reference_path="b.jpg"), embeddings=track_emb,
                         reference_embedding=ref)
    assert [truth[t][c] if c >= 0 else None for t, c in enumerate(rb)] == ["B" if "B" in tr else None for tr in truth]
    nobody = tk.choose_track(ids, frames, tk.FaceSelector("reference", reference_path="c.jpg"), embeddings=track_emb,
                             reference_embedding=rng.normal(0, 0.09, 128))
    assert (nobody == -1).all()
    with pytest.raises(UsageError, match="reference"):
        tk.choose_track(ids, frames, tk.FaceSelector("reference", reference_path="b.jpg"), embeddings=track_emb)
    with pytest.raises(UsageError, match=r"index:5.*2 faces"):
        tk.choose_track(ids, frames, tk.FaceSelector("index", index=5), embeddings=track_emb)


def test_choose_largest_ignores_one_frame_false_detection_and_reidentifies_after_cut():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 0.09, 128), rng.normal(0, 0.09, 128)
    frames = []
    for t in range(20):
        row = [_box(300, 300, 120)]
        if t == 2:
            row.append(_box(800, 100, 250))  # a large spurious "face" on one frame
        if t >= 10:  # after the cut: the person is small, someone else is large
            row = [_box(200, 300, 60), _box(600, 300, 200)]
        frames.append(np.array(row))
    ids = tk.link_tracks(frames, cuts=[10])
    samples = tk.sample_frames_for_embedding(ids)
    embs = []
    for t, i in samples:
        big_other = (t == 2 and i == 1) or (t >= 10 and i == 1)
        embs.append(b if big_other else a)
    emb = tk.mean_track_embeddings(samples, embs, ids)
    ch = tk.choose_track(ids, frames, tk.FaceSelector("largest"), embeddings=emb, cuts=[10])
    assert list(ch[:10]) == [0] * 10 and list(ch[10:]) == [0] * 10  # small but the same person
    # without embeddings the geometry decides in every segment
    geo = tk.choose_track(ids, frames, tk.FaceSelector("largest"), cuts=[10])
    assert list(geo[:10]) == [0] * 10 and list(geo[10:]) == [1] * 10
    # index:0 when the person is not in a later shot: that shot stays empty
    emb2 = dict(emb)
    for tid in {int(x) for row in ids[10:] for x in row}:
        emb2[tid] = b + rng.normal(0, 0.01, 128)
    ix = tk.choose_track(ids, frames, tk.FaceSelector("index", index=0), embeddings=emb2, cuts=[10])
    assert (ix[:10] == 0).all() and (ix[10:] == -1).all()


def _cut_to(after: str, *, n: int = 20, cut: int = 10):
    """Person A (120 px) alone before the cut; after it, ``after`` describes who is there:
    'other' (B alone, larger than A was), 'same' (A, framed smaller), or 'both' (A small, B large)."""
    frames, truth = [], []
    for t in range(n):
        if t < cut:
            frames.append(np.array([_box(300, 300, 120)]))
            truth.append(["A"])
        elif after == "other":
            frames.append(np.array([_box(600, 300, 220)]))
            truth.append(["B"])
        elif after == "same":
            frames.append(np.array([_box(250, 280, 70)]))
            truth.append(["A"])
        else:
            frames.append(np.array([_box(600, 300, 220), _box(200, 300, 60)]))
            truth.append(["B", "A"])
    return frames, truth, [cut]


def _embed_tracks(ids, truth, person, rng, *, noise: float = 0.02) -> dict[int, np.ndarray]:
    samples = tk.sample_frames_for_embedding(ids)
    embs = [person[truth[t][i]] + rng.normal(0, noise, 128) for t, i in samples]
    return tk.mean_track_embeddings(samples, embs, ids)


@pytest.mark.parametrize("selector", ["largest", "index:0"])
def test_after_a_cut_to_someone_else_the_segment_is_left_untouched(selector):
    rng = np.random.default_rng(5)
    person = {"A": rng.normal(0, 0.09, 128), "B": rng.normal(0, 0.09, 128)}
    frames, truth, cuts = _cut_to("other")
    ids = tk.link_tracks(frames, cuts=cuts)
    emb = _embed_tracks(ids, truth, person, rng)
    ch = tk.choose_track(ids, frames, tk.parse_face_selector(selector), embeddings=emb, cuts=cuts)
    # B is larger than A ever was and alone in the shot, yet B is not the person: untouched
    assert (ch[:10] == 0).all() and (ch[10:] == -1).all()
    assert tk.segments_without_person(ch, cuts) == [(10, 20)]


def test_after_a_cut_the_same_person_is_taken_even_smaller_or_beside_someone_larger():
    rng = np.random.default_rng(6)
    person = {"A": rng.normal(0, 0.09, 128), "B": rng.normal(0, 0.09, 128)}
    for after in ("same", "both"):
        frames, truth, cuts = _cut_to(after)
        ids = tk.link_tracks(frames, cuts=cuts)
        emb = _embed_tracks(ids, truth, person, rng)
        ch = tk.choose_track(ids, frames, tk.FaceSelector("largest"), embeddings=emb, cuts=cuts)
        assert [truth[t][c] for t, c in enumerate(ch)] == ["A"] * 20, after
        assert tk.segments_without_person(ch, cuts) == []


def test_after_a_cut_a_face_only_near_the_same_person_bound_is_not_taken():
    """Between REID_MAX_DISTANCE and the same-person threshold: a look-alike, not confirmed."""
    frames, truth, cuts = _cut_to("other")
    ids = tk.link_tracks(frames, cuts=cuts)
    a = np.zeros(128)
    direction = np.zeros(128)
    direction[0] = 1.0
    after = {int(x) for row in ids[10:] for x in row}
    first = int(ids[0][0])
    for d, taken in ((tk.REID_MAX_DISTANCE - 0.02, True), ((tk.REID_MAX_DISTANCE + tk.SAME_PERSON_THRESHOLD) / 2, False)):
        emb = {first: a, **{tid: a + d * direction for tid in after}}
        ch = tk.choose_track(ids, frames, tk.FaceSelector("largest"), embeddings=emb, cuts=cuts)
        assert (ch[10:] == (0 if taken else -1)).all(), d
    assert 0.0 < tk.REID_MAX_DISTANCE < tk.SAME_PERSON_THRESHOLD


def test_without_embeddings_geometry_decides_and_with_an_anchor_only_embeddings_do():
    rng = np.random.default_rng(7)
    frames, truth, cuts = _cut_to("other")
    ids = tk.link_tracks(frames, cuts=cuts)
    # neither side has an embedding: each segment's largest face (today's fallback)
    geo = tk.choose_track(ids, frames, tk.FaceSelector("largest"), cuts=cuts)
    assert (geo == 0).all()
    ix = tk.choose_track(ids, frames, tk.FaceSelector("index", index=0), cuts=cuts)
    assert (ix == 0).all()
    # the person has an embedding but the later segment's faces none: it cannot be confirmed there
    first = int(ids[0][0])
    only_anchor = tk.choose_track(ids, frames, tk.FaceSelector("largest"), embeddings={first: rng.normal(0, 0.09, 128)},
                                  cuts=cuts)
    assert (only_anchor[:10] == 0).all() and (only_anchor[10:] == -1).all()
    # the later segment has an embedding but the person none: geometry (nothing to compare with)
    later = int(ids[10][0])
    only_later = tk.choose_track(ids, frames, tk.FaceSelector("largest"), embeddings={later: rng.normal(0, 0.09, 128)},
                                 cuts=cuts)
    assert (only_later == 0).all()
    # segments before any face and without the person are listed; a partial segment is not
    assert tk.segments_without_person(np.array([-1, -1, 0, -1, 0, -1, -1]), [2, 5]) == [(0, 2), (5, 7)]
    assert tk.segments_without_person(np.array([], dtype=int)) == []


def test_mean_track_embeddings_drops_outlier_samples():
    ids = [np.array([0])] * 40
    samples = tk.sample_frames_for_embedding(ids, every=10)
    assert samples == [(0, 0), (10, 0), (20, 0), (30, 0)]
    base = np.full(128, 0.05)
    embs = [base, base + 0.001, None, base + 0.5]  # one failed, one bad chip
    m = tk.mean_track_embeddings(samples, embs, ids)
    assert set(m) == {0} and face_distance(m[0], base) < 0.01
    by_key = tk.mean_track_embeddings(samples, {s: e for s, e in zip(samples, embs) if e is not None}, ids)
    assert np.allclose(by_key[0], m[0])
    with pytest.raises(UsageError):
        tk.mean_track_embeddings(samples, embs[:2], ids)


# --- real video: a singer across scene cuts -----------------------------------------------------------
@pytest.fixture(scope="module")
def ghost():
    """Faces on every 2nd frame of the first 150 of ghost_nggyup.mp4, and the shot cuts."""
    frames, sigs = [], []
    with av.open(str(VIDEOS / "ghost_nggyup.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= 150:
                break
            rgb = f.to_ndarray(format="rgb24")
            sigs.append(temporal.frame_signature(rgb))
            if i % 2 == 0:
                frames.append(rgb)
    cuts_full = temporal.scene_cuts(np.stack(sigs))
    with FaceAnalyzer(static_images=True, max_faces=4) as fa:
        faces = [fa.detect(f) for f in frames]
    # positions in the sampled list: the first sampled frame at or after each cut
    cuts = sorted({(c + 1) // 2 for c in cuts_full})
    return frames, faces, cuts_full, cuts


def test_singer_tracked_within_shots_and_reidentified_across_cuts(ghost, embedder):
    frames, faces, cuts_full, cuts = ghost
    assert cuts_full == [22, 93]
    boxes = [np.array([f.box for f in fs], float).reshape(-1, 4) for fs in faces]
    ids = tk.link_tracks(boxes, cuts=cuts)
    segments = tk.segment_bounds(len(frames), cuts)
    assert len(segments) == 3
    # the singer (largest, present on nearly every frame) is one continuous track per shot
    shot_tracks = []
    for s, e in segments:
        counts: dict[int, int] = {}
        for t in range(s, e):
            for tid in ids[t]:
                counts[int(tid)] = counts.get(int(tid), 0) + 1
        main, n = max(counts.items(), key=lambda kv: kv[1])
        assert n >= 0.9 * (e - s), (s, e, counts)
        shot_tracks.append(main)
    assert len(set(shot_tracks)) == 3  # new ids after each cut

    samples = tk.sample_frames_for_embedding(ids, every=12)
    assert len(samples) <= 12  # a few embeddings, not one per frame
    embs = [embedder.embed(frames[t], faces[t][i].box) for t, i in samples]
    emb = tk.mean_track_embeddings(samples, embs, ids)
    # the same man in all three shots by his face
    for tid in shot_tracks[1:]:
        assert face_distance(emb[tid], emb[shot_tracks[0]]) < 0.6

    chosen = tk.choose_track(ids, boxes, tk.FaceSelector("largest"), embeddings=emb, cuts=cuts)
    for t in range(len(frames)):
        want = [i for i, tid in enumerate(ids[t]) if int(tid) in shot_tracks]
        assert chosen[t] == (want[0] if want else -1), t
    # the false detection in the brick wall on frame 2 (larger than his face) is not chosen
    if len(faces[1]) > 1:
        assert ids[1][chosen[1]] == shot_tracks[0]
    # index:0 and a reference photo of him (his first frame) find the same man
    ix = tk.choose_track(ids, boxes, tk.FaceSelector("index", index=0), embeddings=emb, cuts=cuts)
    assert np.array_equal(ix, chosen)
    ref = embedder.embed(frames[0], faces[0][0].box)
    rf = tk.choose_track(ids, boxes, tk.FaceSelector("reference", reference_path="rick.jpg"), embeddings=emb,
                         reference_embedding=ref, cuts=cuts)
    assert np.array_equal(rf, chosen)
    # someone else's photo matches nobody
    astro = _image("skimage_astronaut.png")
    with FaceAnalyzer(static_images=True, max_faces=1) as fa:
        other = embedder.embed(astro, fa.detect(astro)[0].box)
    none = tk.choose_track(ids, boxes, tk.FaceSelector("reference", reference_path="a.png"), embeddings=emb,
                           reference_embedding=other, cuts=cuts)
    assert (none == -1).all()


def test_pick_chosen_takes_the_chosen_slot_and_leaves_absent_frames_empty():
    from recast.models.tracking import pick_chosen

    lms = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    boxes = np.arange(4 * 2 * 4, dtype=np.int32).reshape(4, 2, 4)
    chosen = np.array([0, 1, -1, 1])
    got = pick_chosen(lms, chosen)
    assert np.array_equal(got[[0, 1, 3]], lms[[0, 1, 3], [0, 1, 1]]) and np.isnan(got[2]).all()
    b = pick_chosen(boxes, chosen)
    assert b.dtype == np.int32 and (b[2] == 0).all() and np.array_equal(b[1], boxes[1, 1])
