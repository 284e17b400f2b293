"""The classic HEAD swap on real media: long-haired sources onto frames of real plates."""

from __future__ import annotations

import time

import av
import cv2
import numpy as np
import pytest

from recast.errors import InputError, UnsupportedMediaError
from recast.models import head as hd
from recast.models.retarget import retarget_sequence
from recast.models.face import FaceAnalyzer
from recast.models.head import (
    ColourMatch,
    HeadFrame,
    HeadSwapper,
    SourceHead,
    estimate_yaw,
    extract_source_head,
    head_region,
    skin_colour_stats,
)
from recast.models.masks import PersonSegmenter, dilate_mask, face_oval_mask
from recast.models.qc import hair_colour_transfer
from tests.conftest import IMAGES, VIDEOS

PLATE = VIDEOS / "liveportrait_d0.mp4"  # short black hair, green screen
FRAMES = [0, 32]  # rest, wide grin


def _image(name: str, scale: float = 1.0) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(IMAGES / name)), cv2.COLOR_BGR2RGB)
    if scale != 1.0:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return rgb


def _frames(path, idx):
    out = {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in idx:
                out[i] = f.to_ndarray(format="rgb24")
            if i >= max(idx):
                break
    return [out[i] for i in idx]


def _landmarks(rgb: np.ndarray) -> np.ndarray:
    with FaceAnalyzer(static_images=True, max_faces=1) as fa:
        faces = fa.detect(rgb)
    assert faces, "test media: no face found"
    return faces[0].landmarks


def _plate(path, idx):
    frames = _frames(path, idx)
    with FaceAnalyzer(static_images=False, max_faces=1) as fa:
        lms = np.stack([fa.detect(f)[0].landmarks for f in frames])
    with PersonSegmenter() as seg:
        persons = [seg.segment(f) for f in frames]
    return frames, lms, persons


def _old_heads(clip: str, idx):
    """Per frame of a shared clip: (frame, landmarks, person mask, old head mask, face frame,
    every pixel's lateral and downward face coordinates)."""
    frames, lms, persons = _plate(VIDEOS / clip, idx)
    for frame, lm, person in zip(frames, lms, persons):
        ff = hd.face_frame(lm)
        h, w = frame.shape[:2]
        yield (frame, lm, person, hd.old_head_mask(frame, person, lm), ff, *ff.coords(*hd.pixel_grid((0, 0, w, h))))


@pytest.fixture(scope="module")
def blonde():
    """deepface_img3 (long straight blonde hair), halved to keep the test quick."""
    rgb = _image("deepface_img3.jpg", 0.5)
    lm = _landmarks(rgb)
    return rgb, lm, extract_source_head(rgb, lm, role_name="blonde")


@pytest.fixture(scope="module")
def case(blonde):
    _, _, src = blonde
    frames, plm, persons = _plate(PLATE, FRAMES)
    targets = retarget_sequence(plm, src.landmarks)
    swapper = HeadSwapper(src)
    results = [swapper.swap(f, target_landmarks=t, plate_landmarks=p, plate_person_mask=m, background=None,
                            background_known=None) for f, t, p, m in zip(frames, targets, plm, persons)]
    return dict(src=src, frames=frames, plm=plm, persons=persons, targets=targets, swapper=swapper, results=results)


def _old_head(plm, person, shape):
    region = head_region(plm, shape)
    return region & np.where(person >= 128, 255, 0).astype(np.uint8)


def _face_height(lm):
    return hd.face_frame(np.asarray(lm, np.float64)).height


# --- the source head ---------------------------------------------------------------------------
def test_source_head_covers_long_hair_and_stops_above_the_shoulders(blonde):
    rgb, lm, src = blonde
    assert isinstance(src, SourceHead)
    assert src.rgb.dtype == np.uint8 and src.alpha.dtype == np.float32 and src.hair.dtype == np.bool_
    assert src.alpha.shape == src.rgb.shape[:2] == src.hair.shape
    assert src.neck_line.shape == (2, 2)
    off = lm[0, :2] - src.landmarks[0, :2]  # the crop's origin in the photo
    ff = hd.face_frame(src.landmarks.astype(np.float64))
    H = ff.height
    # the hair is in the matte: a big share of it, above the forehead and hanging below the chin
    assert src.hair.sum() > 0.5 * H * H
    ys, xs = np.nonzero(src.hair)
    lat, below = ff.coords(xs.astype(np.float32), ys.astype(np.float32))
    assert (below < -1.05 * H).sum() > 0.05 * H * H, "no hair above the forehead"
    assert ((below > 0.1 * H) & (np.abs(lat) > 0.4 * ff.width)).sum() > 0.02 * H * H, "long hair below the chin dropped"
    # the matte stops at most 0.6 face heights under the chin
    ys, xs = np.nonzero(src.alpha > 0.5)
    _, below = ff.coords(xs.astype(np.float32), ys.astype(np.float32))
    assert below.max() <= hd._HAIR_LIMIT * H + 2
    # and leaves the shoulders out (MediaPipe Pose, in photo pixels, moved into the crop)
    pose = hd._detect_pose(rgb)
    assert pose is not None
    for j in (11, 12):
        x, y = np.round(pose[j, :2] - off).astype(int)
        if 0 <= y < src.alpha.shape[0] and 0 <= x < src.alpha.shape[1]:
            assert src.alpha[y, x] < 0.1, f"shoulder {j} is inside the head matte"
    # the face itself is opaque and not hair
    oval = hd.face_skin_mask(src.landmarks, src.alpha.shape) > 0
    assert (src.alpha[oval] > 0.9).mean() > 0.95
    assert src.hair[oval].mean() < 0.15


def _hair_under_the_jaw(src: SourceHead) -> int:
    """Hair pixels of the source head below the chin within 0.6 face widths of the centre line."""
    ff = hd.face_frame(src.landmarks.astype(np.float64))
    ys, xs = np.nonzero(src.hair)
    lat, below = ff.coords(xs.astype(np.float64), ys.astype(np.float64))
    return int(((below > 0) & (np.abs(lat) < 0.6 * ff.width)).sum())


def test_the_shadow_under_a_jaw_is_skin_while_long_hair_beside_the_neck_stays_hair(blonde):
    # the astronaut's short hair ends above her jaw; the shadow under it is nearer the light-brown
    # hair sample than the lit cheeks. Taken for hair (47 pixels here before), it kept the source's
    # colour while the skin around it was matched to the plate: grey-green patches under the chin
    astro = _image("skimage_astronaut.png")
    assert _hair_under_the_jaw(extract_source_head(astro, _landmarks(astro), role_name="astro")) == 0
    # long hair hanging there comes down from the hair above and is kept
    _, _, src = blonde
    H, W = hd.face_frame(src.landmarks.astype(np.float64)).height, hd.face_frame(src.landmarks.astype(np.float64)).width
    assert _hair_under_the_jaw(src) > 0.05 * H * W


def _turned(lm: np.ndarray, deg: float) -> np.ndarray:
    """Landmarks of the same face turned ``deg`` about the vertical axis (orthographic)."""
    c = lm.mean(0)
    a = np.radians(deg)
    x, z = lm[:, 0] - c[0], lm[:, 2] - c[2]
    out = lm.copy()
    out[:, 0] = c[0] + x * np.cos(a) + z * np.sin(a)
    out[:, 2] = c[2] - x * np.sin(a) + z * np.cos(a)
    return out


def test_profile_source_is_refused_with_a_clear_error():
    # no photo in the media set is in profile (the most turned is ~29°), so the face of a frontal
    # photo is turned in 3-D and the estimator and the refusal are tested on those landmarks
    rgb = _image("skimage_astronaut.png")
    lm = _landmarks(rgb)
    assert abs(estimate_yaw(lm, rgb.shape[:2])) < 10
    yaws = [estimate_yaw(_turned(lm, deg), rgb.shape[:2]) for deg in (30.0, -30.0)]
    assert all(abs(abs(y) - 30) < 10 for y in yaws) and yaws[0] * yaws[1] < 0
    prof = _turned(lm, 70.0)
    assert abs(abs(estimate_yaw(prof, rgb.shape[:2])) - 70) < 15
    with pytest.raises(UnsupportedMediaError) as ei:
        extract_source_head(rgb, prof, person_mask=np.zeros(rgb.shape[:2], np.uint8), role_name="astro")
    msg = str(ei.value)
    assert "source 'astro'" in msg and "profile" in msg and "\n" not in msg
    # a real three-quarter photo (kit_harington, ~20°) is accepted
    kit = _image("face_recognition_kit_harington_john2.jpeg")
    src = extract_source_head(kit, _landmarks(kit), role_name="kit")
    assert src.alpha.max() > 0.9


def _in_photo(src: SourceHead, lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The source head's matte placed back on the whole photo (0 outside the crop)."""
    x0, y0 = np.round(lm[0, :2] - src.landmarks[0, :2]).astype(int)
    full = np.zeros(shape, np.float32)
    h, w = src.alpha.shape
    full[y0:y0 + h, x0:x0 + w] = src.alpha
    return full


@pytest.mark.parametrize("name, clothing", [
    # Einstein: a white wing collar rising beside the jaw and a dark suit under it
    ("liveportrait_s12.jpg", lambda lab: ((lab[..., 0] > 85) & (np.hypot(lab[..., 1], lab[..., 2]) < 12)) | (lab[..., 0] < 25)),
    # the astronaut: the black ring of the suit's neck, beside and under the chin
    ("skimage_astronaut.png", lambda lab: lab[..., 0] < 20),
])
def test_source_head_leaves_the_clothing_under_and_beside_the_chin_out(name, clothing):
    """A collar, a suit, a helmet ring are not head: what looks like the clothing further down
    (by colour, in the photo's own clothing palette) is cut from the matte under the chin and
    beside the jaw, while the face, the neck skin and the hair stay."""
    rgb = _image(name)
    lm = _landmarks(rgb)
    src = extract_source_head(rgb, lm, role_name=name)
    alpha = _in_photo(src, lm, rgb.shape[:2])
    ff = hd.face_frame(lm)
    H = ff.height
    ys, xs = np.mgrid[0:rgb.shape[0], 0:rgb.shape[1]].astype(np.float32)
    lat, below = ff.coords(xs, ys)
    lab = hd.cielab(rgb)
    oval = hd.face_skin_mask(lm, rgb.shape[:2]) > 0
    # clothing-coloured pixels around the jaw and under the chin, within the head's reach
    near = (below > -0.3 * H) & (below < 0.6 * H) & (np.abs(lat) < 1.3 * ff.width) & ~oval
    cloth = near & clothing(lab)
    assert cloth.sum() > 0.02 * H * H, "test media: no clothing found near the chin"
    # measured: Einstein 0.21 -> 0.06, the astronaut 0.13 -> 0.004 (Obama's white collar, not
    # asserted: 0.19 -> 0.15, its upper part beside the jaw passes for his grey hair)
    assert alpha[cloth].mean() < 0.08, f"clothing kept in the head matte: mean alpha {alpha[cloth].mean():.2f}"
    assert (alpha[oval] > 0.9).mean() > 0.95  # the face stays
    hair = (below < -1.03 * H) & (below > -1.15 * H) & (np.abs(lat) < 0.4 * ff.width)  # short hair too
    assert alpha[hair].mean() > 0.8  # and the hair above the forehead


def test_where_the_photo_border_cuts_the_hair_the_matte_fades_out_instead_of_a_straight_edge():
    rgb = _image("deca_id08456-SEvpX9LhEP4-000957.jpg")  # 224 px, the face filling the frame: hair cut on three sides
    lm = _landmarks(rgb)
    src = extract_source_head(rgb, lm, role_name="tight")
    alpha = _in_photo(src, lm, rgb.shape[:2])
    H = hd.face_frame(lm).height
    # the photo's own edges: no opaque straight line there (before: alpha 1.0 along three edges)
    for edge in (alpha[0], alpha[:, 0], alpha[:, -1]):
        assert edge.max() < 0.1, edge.max()
    # and the fade is short: a tenth of a face inside the border the matte is at full strength again
    inner = alpha[int(0.1 * H):, int(0.1 * H):-int(0.1 * H)]
    assert inner.max() > 0.99


def test_head_cut_off_by_the_border_is_refused():
    rgb = _image("skimage_astronaut.png")
    lm = _landmarks(rgb)
    moved = lm.copy()
    moved[:, 1] -= lm[152, 1] - 0.45 * (lm[152, 1] - lm[10, 1])  # chin near the top edge
    with pytest.raises(InputError, match="source 'astro'.*cut off"):
        extract_source_head(rgb, moved, person_mask=np.full(rgb.shape[:2], 255, np.uint8), role_name="astro")


def test_skin_colour_stats_per_region(blonde):
    rgb, lm, _ = blonde
    st = skin_colour_stats(rgb, lm)
    assert st.shape == (len(hd.REGION_NAMES), 6)
    assert np.isfinite(st[:6]).all()  # every face region of a frontal face is visible
    assert (st[:, 0][np.isfinite(st[:, 0])] > 30).all()  # skin, not hair
    off = lm.copy()
    off[:, 0] += 10 * rgb.shape[1]
    assert np.isnan(skin_colour_stats(rgb, off)).all()


# --- the swap -------------------------------------------------------------------------------------
def test_swap_changes_only_the_heads(case):
    for plate, res, plm, person in zip(case["frames"], case["results"], case["plm"], case["persons"]):
        assert isinstance(res, HeadFrame)
        assert res.frame.shape == plate.shape and res.frame.dtype == np.uint8
        changed = (res.frame != plate).any(axis=2)
        assert not (changed & (res.mask == 0)).any(), "a changed pixel is missing from the mask"
        H = _face_height(plm)
        union = _old_head(plm, person, plate.shape) | res.head_mask
        grow = int(np.ceil((HeadSwapper.GROW + HeadSwapper.SPILL) * H)) + 3
        outside = dilate_mask(union, grow) == 0
        assert outside.mean() > 0.2  # a long-haired head fills much of a 512x512 frame
        assert np.array_equal(res.frame[outside], plate[outside])
        # the head did change, a lot, and the new head is where the face is
        assert changed.mean() > 0.15
        cy, cx = np.mean(np.nonzero(res.head_mask), axis=1)
        assert abs(cx - plm[:, 0].mean()) < 0.3 * H


def test_hair_colour_follows_the_source(case):
    with FaceAnalyzer(static_images=True, max_faces=1) as fa:
        for plate, res, plm in zip(case["frames"], case["results"], case["plm"]):
            out_faces = fa.detect(res.frame)
            assert out_faces, "no face found on the output"
            assert hair_colour_transfer(res.frame, out_faces[0].landmarks, case["src"], plate, plm) is True
            # the plate itself does not pass for the source
            assert hair_colour_transfer(plate, plm, case["src"], plate, plm) is False


def test_occluder_stays_the_plate(case):
    plate, plm, person, tgt = case["frames"][1], case["plm"][1], case["persons"][1], case["targets"][1]
    occ = np.zeros(plate.shape[:2], np.uint8)
    # a "hand" over the mouth and chin
    x0, x1 = int(plm[61, 0]) - 10, int(plm[291, 0]) + 10
    y0, y1 = int(plm[13, 1]) - 5, int(plm[152, 1]) + 20
    occ[y0:y1, x0:x1] = 255
    res = case["swapper"].swap(plate, target_landmarks=tgt, plate_landmarks=plm, plate_person_mask=person,
                               background=None, background_known=None, occlusion_mask=occ)
    m = occ > 0
    assert np.array_equal(res.frame[m], plate[m])
    assert not (res.mask[m] > 0).any() and not (res.head_mask[m] > 0).any()
    # while around it the head is swapped
    ring = (dilate_mask(occ, 15) > 0) & ~m
    assert (res.frame[ring] != plate[ring]).any(axis=1).mean() > 0.5


def test_old_head_takes_the_background_where_the_new_head_leaves_it():
    # a short-haired source on a long-haired plate: the plate's hair at the sides is uncovered
    src_rgb = _image("skimage_astronaut.png")
    src = extract_source_head(src_rgb, _landmarks(src_rgb), role_name="astro")
    frames, plm, persons = _plate(VIDEOS / "liveportrait_d3.mp4", [0])
    plate, plm, person = frames[0], plm[0], persons[0]
    tgt = retarget_sequence(plm[None], src.landmarks)[0]
    bg = np.zeros_like(plate)
    bg[..., 0], bg[..., 2] = 250, 10  # a colour that is nowhere in the plate
    bg[..., 1] = np.arange(plate.shape[1], dtype=np.uint8)[None, :] // 4
    known = np.zeros(plate.shape[:2], bool)
    known[:, : plate.shape[1] // 2] = True  # only the left half is known
    sw = HeadSwapper(src)
    res = sw.swap(plate, target_landmarks=tgt, plate_landmarks=plm, plate_person_mask=person, background=bg,
                  background_known=known)
    old = _old_head(plm, person, plate.shape) > 0
    H = _face_height(plm)
    # pixels of the old head far from the new one: background where known, inpainted elsewhere
    far = old & (dilate_mask(res.head_mask, int(0.04 * H) + 2) == 0)
    far_known, far_unknown = far & known, far & ~known
    assert far_known.sum() > 50 and far_unknown.sum() > 50
    assert np.array_equal(res.frame[far_known], bg[far_known])
    # not the plate's old head any more, and not the (unknown) background either
    assert (np.abs(res.frame[far_unknown].astype(int) - plate[far_unknown]).sum(1) > 30).mean() > 0.5
    assert not (res.frame[far_unknown] == bg[far_unknown]).all(axis=1).any()
    # what was inpainted and shows beside and under the jaw (long hair over the shoulders) is
    # reported as guessed (QC asks a person to look at it); what the clean plate gave is not, nor
    # a guessed wall beside the head (QC's fill test judges that)
    guessed = res.guessed > 0
    _, below = hd.face_frame(plm).coords(*hd.pixel_grid((0, 0, plate.shape[1], plate.shape[0])))
    low = below > -0.25 * H
    assert (far_unknown & low).sum() > 50 and (far_unknown & ~low).sum() > 50
    assert not (guessed & known).any() and guessed[far_unknown & low].mean() > 0.95
    assert not guessed[far_unknown & ~low].any()
    assert not (guessed & (res.mask == 0)).any()  # within what the swap changed
    everywhere = sw.swap(plate, target_landmarks=tgt, plate_landmarks=plm, plate_person_mask=person, background=bg,
                         background_known=np.ones_like(known))
    assert everywhere.guessed.max() == 0
    # no background at all: everything uncovered is inpainted from around the head
    res2 = sw.swap(plate, target_landmarks=tgt, plate_landmarks=plm, plate_person_mask=person, background=None,
                   background_known=None)
    assert (np.abs(res2.frame[far].astype(int) - plate[far]).sum(1) > 30).mean() > 0.5


def test_a_close_ups_shoulders_beside_the_jaw_stay_the_plates_while_long_hair_there_goes():
    """liveportrait_d0 is framed close: the shoulders rise beside the jaw, inside the head region.
    Taken for the old head they were inpainted into a smeared torso; they are the body and stay
    exactly the plate's. A long-haired plate's hair there still goes (s32: a strand hanging
    beside the neck, over a dark jacket, is part of the old head)."""
    src_rgb = _image("skimage_astronaut.png")  # short hair: it does not cover the plate's shoulders
    src = extract_source_head(src_rgb, _landmarks(src_rgb), role_name="astro")
    frames, plm, persons = _plate(PLATE, [0])
    plate, plm, person = frames[0], plm[0], persons[0]
    tgt = retarget_sequence(plm[None], src.landmarks)[0]
    res = HeadSwapper(src).swap(plate, target_landmarks=tgt, plate_landmarks=plm, plate_person_mask=person, background=None,
                                background_known=None)
    ff = hd.face_frame(plm)
    h, w = plate.shape[:2]
    lat, below = ff.coords(*hd.pixel_grid((0, 0, w, h)))
    # inside the head region (above its cut 0.05 face heights under the chin), clear of the new head
    shoulders = ((person >= 128) & (below > -0.2 * ff.height) & (below < 0.05 * ff.height) & (np.abs(lat) > 0.6 * ff.width)
                 & (dilate_mask(res.head_mask, int(0.05 * ff.height)) == 0))
    assert shoulders.sum() > 0.01 * ff.height ** 2, "the test plate's shoulders no longer rise beside the jaw"
    kept = (res.frame[shoulders] == plate[shoulders]).all(axis=1)
    print(f"shoulder pixels kept: {kept.mean():.3f} of {shoulders.sum()}")
    assert kept.mean() > 0.97, kept.mean()

    (_, _, _, old, ff, lat, below), = _old_heads("liveportrait_s32.mp4", [0])
    beside_neck = (below > 0.1 * ff.height) & (np.abs(lat) > 0.42 * ff.width)
    assert (old & beside_neck).sum() > 0.002 * ff.height ** 2  # the strand over the jacket (the region stops at 0.05)
    assert not (old & (below > 0.1 * ff.height) & (np.abs(lat) > 1.3 * ff.width)).any()  # not the jacket's shoulder


def test_a_grey_bobs_tips_beside_the_jaw_are_old_head_though_the_neck_is_in_shade():
    """Theresa May's plate: the shaded neck under her jaw (L 38-60 against her cheeks' 82) fell
    outside the skin test and was sampled as the chest's "clothing", the colour nearest her grey
    hair, so the hair hanging beside the jaw was no longer followed and its tips stayed beside
    the new head (0.006-0.007 H^2 of old head there; 0.023-0.037 with the shade told apart)."""
    for frame, lm, person, old, ff, lat, below in _old_heads("aniportrait_pose_ref_video.mp4", [12, 33]):
        beside_jaw = (below > -0.25 * ff.height) & (np.abs(lat) > 0.42 * ff.width) & (person >= 128)
        share = (old & beside_jaw).sum() / ff.height ** 2
        print(f"old head beside the jaw: {share:.4f} H^2")
        assert share > 0.015, share
        # the jacket under her shoulders is not taken with the hair
        assert not (old & (below > 0.2 * ff.height) & (np.abs(lat) > 1.0 * ff.width)).any()


def test_a_plates_collar_rising_beside_the_jaw_is_not_old_head():
    """liveportrait_d19's hoodie collar rises beside his jaw, inside the neck column: taken for
    old head it was inpainted from around, a blurred box with the column's straight sides under
    the new chin. Of the not-skin pixels there (collar, jaw shadow), 0.022 H^2 were old head;
    0.010-0.013 now, the rest the shadow under the jaw."""
    for frame, lm, person, old, ff, lat, below in _old_heads("liveportrait_d19.mp4", [0, 40]):
        h, w = frame.shape[:2]
        oval = dilate_mask(face_oval_mask(lm, (h, w)), max(1, round(0.04 * ff.height))) > 0
        lab = hd.cielab(frame)
        skin = hd.skin_model(lab, lm)
        not_skin = (np.abs(lab - skin[0]) / skin[1]).max(axis=2) > 3.0
        collar = (below > -0.25 * ff.height) & (np.abs(lat) < 0.42 * ff.width) & ~oval & (person >= 128) & not_skin
        assert collar.sum() > 0.08 * ff.height ** 2, "the test plate's collar no longer rises beside the jaw"
        taken = (old & collar).sum() / ff.height ** 2
        print(f"collar taken for old head: {taken:.4f} H^2")
        assert taken < 0.016, taken
        assert old[(face_oval_mask(lm, (h, w)) > 0) & (below < -0.3 * ff.height)].mean() > 0.99  # the face still goes


def test_a_source_head_leaves_its_neighbours_out_and_keeps_its_long_hair():
    """The source matte is refined with GrabCut under the jaw and beside the face, and kept in
    one piece with the face. In a group photo the person mask holds the neighbours: the hair of
    the woman beside Kit was in his head (1762 px of alpha beyond 1.1 face widths; 0 now), and
    beside the old man of dlib_2007 a dark wall and his neighbour's shoulder (0.125 H^2 of alpha
    beyond 1.0 face widths; under 0.04 now). A long-haired photo keeps its hanging hair (rose_leslie:
    0.227 H^2 beside the neck below the jaw corners before, 0.219 now; with GrabCut's head
    colours learnt without her hanging strands, her hair was cut at the jaw)."""
    def cut(name):
        rgb = _image(name)
        sh = extract_source_head(rgb, _landmarks(rgb), role_name=name)
        ff = hd.face_frame(sh.landmarks.astype(np.float64))
        lat, below = ff.coords(*hd.pixel_grid((0, 0, sh.alpha.shape[1], sh.alpha.shape[0])))
        return sh.alpha, ff, lat, below

    alpha, ff, lat, below = cut("face_recognition_kit_with_rose.jpg")
    assert alpha[lat < -1.1 * ff.width].sum() < 50, alpha[lat < -1.1 * ff.width].sum()
    assert alpha[(below < -0.5 * ff.height) & (below > -1.0 * ff.height) & (np.abs(lat) < 0.3 * ff.width)].mean() > 0.95

    alpha, ff, lat, below = cut("dlib_2007_007763.jpg")
    beside = alpha[np.abs(lat) > 1.0 * ff.width].sum() / ff.height ** 2
    print(f"dlib_2007 beyond 1.0 W: {beside:.3f} H^2")
    assert beside < 0.07, beside

    alpha, ff, lat, below = cut("face_recognition_rose_leslie_img2.jpg")
    hanging = alpha[(below > -0.25 * ff.height) & (np.abs(lat) > 0.5 * ff.width)].sum() / ff.height ** 2
    print(f"rose_leslie hanging hair: {hanging:.3f} H^2")
    assert hanging > 0.18, hanging


def test_glasses_plate_aligns_and_colour_match_is_used():
    src_rgb = _image("deepface_img45.jpg")
    src = extract_source_head(src_rgb, _landmarks(src_rgb), role_name="dark-hair")
    frames, plm, persons = _plate(VIDEOS / "liveportrait_d19.mp4", [0])  # round glasses
    plate, plm, person = frames[0], plm[0], persons[0]
    tgt = retarget_sequence(plm[None], src.landmarks)[0]
    sw = HeadSwapper(src)
    colour = ColourMatch(source_stats=skin_colour_stats(src.rgb, src.landmarks), plate_stats=skin_colour_stats(plate, plm))
    res = sw.swap(plate, target_landmarks=tgt, plate_landmarks=plm, plate_person_mask=person, background=None,
                  background_known=None, colour=colour)
    with FaceAnalyzer(static_images=True, max_faces=1) as fa:
        out = fa.detect(res.frame)
    assert out, "no face found on the output"
    # the output's eyes sit where the target put them (alignment held through the glasses)
    H = _face_height(plm)
    err = np.linalg.norm(out[0].landmarks[[33, 133, 362, 263], :2] - tgt[[33, 133, 362, 263], :2], axis=1).mean()
    assert err < 0.06 * H
    # the skin was moved towards the plate's: the output cheeks are nearer the plate's than the source's
    st_out = skin_colour_stats(res.frame, out[0].landmarks)
    cheeks = [1, 2]
    d_plate = np.linalg.norm(st_out[cheeks, :3] - colour.plate_stats[cheeks, :3], axis=1).mean()
    d_src = np.linalg.norm(st_out[cheeks, :3] - colour.source_stats[cheeks, :3], axis=1).mean()
    assert d_plate < d_src


def test_swap_time_per_frame(case, capsys):
    """Single-thread time of one 512x512 frame (the 8 fps target needs ~40 ms of it)."""
    plate, plm, person, tgt = case["frames"][0], case["plm"][0], case["persons"][0], case["targets"][0]
    sw = case["swapper"]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        kw = dict(target_landmarks=tgt, plate_landmarks=plm, plate_person_mask=person, background=None,
                  background_known=None)
        sw.swap(plate, **kw)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            sw.swap(plate, **kw)
            times.append(time.perf_counter() - t)
    finally:
        cv2.setNumThreads(threads)
    best, med = min(times) * 1000, float(np.median(times)) * 1000
    with capsys.disabled():
        print(f"\nhead swap 512x512, long-haired source, 1 thread: best {best:.1f} ms, median {med:.1f} ms per frame")
    # loose bound: the machine is shared; the measured figure is what counts
    assert best < 150


def test_mouth_interior_comes_from_the_plate_when_the_source_mouth_is_closed(case):
    sw = case["swapper"]
    assert not sw._mouth_open, "deepface_img3 smiles with closed lips"
    plate, res, plm, tgt = case["frames"][1], case["results"][1], case["plm"][1], case["targets"][1]  # wide grin
    inner = list(hd.LIPS_INNER)
    t_mask = np.zeros(plate.shape[:2], np.uint8)
    p_mask = np.zeros(plate.shape[:2], np.uint8)
    cv2.fillPoly(t_mask, [np.round(tgt[inner, :2]).astype(np.int32)], 255)
    cv2.fillPoly(p_mask, [np.round(plm[inner, :2]).astype(np.int32)], 255)
    t_mask = cv2.erode(t_mask, np.ones((3, 3), np.uint8))
    assert t_mask.sum() > 0
    # the plate's teeth: the output's mouth interior has the plate's interior colour
    c_out = res.frame[t_mask > 0].astype(float).mean(0)
    c_plate = plate[p_mask > 0].astype(float).mean(0)
    assert np.abs(c_out - c_plate).max() < 25


def test_a_collar_up_to_the_chin_stays_in_front_of_the_new_neck():
    # the demo's plate still with a dark polo neck painted from just under the chin: the new
    # head's fading piece of neck was drawn over it as a blurred band of skin (134 of its pixels
    # below 0.12 face heights changed by more than 30 levels before; none should)
    from recast.demo import grace_hopper_photo

    plate = cv2.resize(cv2.cvtColor(cv2.imread(str(grace_hopper_photo())), cv2.COLOR_BGR2RGB), (384, 480),
                       interpolation=cv2.INTER_AREA)
    lm = _landmarks(plate)
    with PersonSegmenter() as seg:
        person = seg.segment(plate)
    pf = hd.face_frame(lm.astype(np.float64))
    _, below = pf.coords(*hd.pixel_grid((0, 0, plate.shape[1], plate.shape[0])))
    collar = (below > 0.08 * pf.height) & (person > 128)
    rng = np.random.default_rng(0)
    plate[collar] = np.clip(np.array([40, 45, 70]) + rng.normal(0, 4, (int(collar.sum()), 3)), 0, 255).astype(np.uint8)
    plm = _landmarks(plate)
    with PersonSegmenter() as seg:
        person = seg.segment(plate)
    astro = _image("skimage_astronaut.png")
    src = extract_source_head(astro, _landmarks(astro), role_name="astro")
    tgt = retarget_sequence(plm[None], src.landmarks)[0]
    res = HeadSwapper(src).swap(plate, target_landmarks=tgt, plate_landmarks=plm, plate_person_mask=person,
                                background=None, background_known=None)
    diff = np.abs(res.frame.astype(int) - plate).sum(2)
    pf = hd.face_frame(plm.astype(np.float64))
    _, below = pf.coords(*hd.pixel_grid((0, 0, plate.shape[1], plate.shape[0])))
    deep = collar & (below > 0.12 * pf.height)
    assert deep.sum() > 0.5 * pf.height ** 2
    assert (diff[deep] > 30).sum() < 20
    # the new face is there all the same
    oval = hd.face_skin_mask(plm, plate.shape[:2]) > 0
    assert (diff[oval] > 30).mean() > 0.5



def test_an_earring_the_person_mask_missed_goes_with_the_old_head_where_the_clean_plate_is_known():
    # segmentation gives an earring, a strand or the halo of hair only a faint chance of being the
    # person, so it stayed beside the new head (QC's leftover plate head). Where the clean plate
    # behind it is known, the difference from it is the old head and is replaced as well
    src_rgb = _image("skimage_astronaut.png")
    src = extract_source_head(src_rgb, _landmarks(src_rgb), role_name="astro")
    frames, plm, persons = _plate(PLATE, [0])  # short hair, green screen: room beside the head
    clean, plm, person = frames[0], plm[0], persons[0].copy()
    pf = hd.face_frame(plm.astype(np.float64))
    H = pf.height
    # a gold earring just outside the person's outline at the height of the mouth (where the person
    # mask is faint: it is not the person's)
    y = int(round(pf.point(0.0, -0.3 * H)[1]))
    x = int(round(pf.point(0.0, -0.3 * H)[0]))
    while x > 0 and person[y, x] >= 128:
        x -= 1
    outside = np.array([x - 0.04 * H, y])
    yy, xx = np.mgrid[0:clean.shape[0], 0:clean.shape[1]]
    ring = (xx - outside[0]) ** 2 + (yy - outside[1]) ** 2 <= (0.04 * H) ** 2
    ring &= person < 128
    assert ring.sum() > 20, "test media: no room for the earring beside the head"
    plate = clean.copy()
    plate[ring] = (230, 190, 40)
    person[ring] = 60
    tgt = retarget_sequence(plm[None], src.landmarks)[0]
    res = HeadSwapper(src).swap(plate, target_landmarks=tgt, plate_landmarks=plm, plate_person_mask=person,
                                background=clean, background_known=None)
    seen = ring & (res.head_mask == 0)
    assert seen.sum() > 10
    # the clean plate, up to the blend's soft reach near the new head (the earring is 160+ levels off)
    assert (np.abs(res.frame[seen].astype(int) - clean[seen]).max(1) < 20).all()
    # without a known clean plate, nothing beside the old head is guessed away
    res2 = HeadSwapper(src).swap(plate, target_landmarks=tgt, plate_landmarks=plm, plate_person_mask=person,
                                 background=None, background_known=None)
    seen2 = ring & (res2.head_mask == 0) & (res2.mask == 0)
    assert np.array_equal(res2.frame[seen2], plate[seen2])
