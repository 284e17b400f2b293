"""Source vetting (recast.models.source_vetting, services.shots.vet_sources) on the shared photos
and on images derived from them: a face shrunk to 40 px, blurred ×4, made grey, with a
microphone or a hand over the mouth, printed and photographed on a desk."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from recast.errors import AmbiguousFaceError, InputError, NoFaceError, UnsupportedMediaError, UsageError
from recast.media import read_image
from recast.models import source_vetting as sv
from tests.conftest import IMAGES, VIDEOS

PLATE_FACE_PX = 243.0  # the face of aniportrait_pose_ref_video.mp4 (the tests' short plate)


@pytest.fixture(scope="module")
def analyzer():
    from recast.models.face import FaceAnalyzer

    with FaceAnalyzer(static_images=True, max_faces=8) as fa:
        yield fa


def photo(name: str) -> np.ndarray:
    return read_image(IMAGES / name, role="source")


def vet(analyzer, rgb, name="photo.jpg", *, hands=True, **kw):
    faces = analyzer.detect(rgb)
    return {f.check: f for f in sv.vet_source(rgb, faces, name=name, plate_face_px=kw.pop("plate_face_px", PLATE_FACE_PX),
                                             hands=sv.detect_hands(rgb) if hands and faces else None, **kw)}


def largest(analyzer, rgb):
    return max(analyzer.detect(rgb), key=lambda f: f.area)


def microphone(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """A dark hand-held microphone: its head over the mouth, its handle down past the chin."""
    out = rgb.copy()
    fw = sv.face_width(lm)
    mx, my = lm[13, :2]
    cv2.rectangle(out, (int(mx - 0.06 * fw), int(my)), (int(mx + 0.06 * fw), int(lm[152, 1] + 0.8 * fw)), (40, 40, 45), -1)
    cv2.circle(out, (int(mx), int(my + 0.05 * fw)), int(0.2 * fw), (70, 70, 75), -1)
    return out


def glove(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """A coloured hand-like patch reaching over the mouth from the side of the face."""
    out = rgb.copy()
    fw = sv.face_width(lm)
    mx, my = lm[13, :2]
    pts = np.array([[mx - 0.1 * fw, my - 0.15 * fw], [mx + 0.9 * fw, my - 0.2 * fw], [mx + 0.9 * fw, my + 0.25 * fw],
                    [mx - 0.1 * fw, my + 0.2 * fw]], np.int32)
    cv2.fillPoly(out, [pts], (150, 60, 200))
    return out


def photographed_print(rgb: np.ndarray) -> np.ndarray:
    """The photo printed with a white border, its contrast halved, lying on a brown desk."""
    h, w = rgb.shape[:2]
    img = (rgb.astype(np.float32) * 0.45 + 70).astype(np.uint8)
    b = int(0.06 * max(h, w))
    img = cv2.copyMakeBorder(img, b, b, b, b, cv2.BORDER_CONSTANT, value=(235, 232, 225))
    H, W = img.shape[:2]
    noise = np.random.default_rng(0).normal(0, 8, (int(H * 1.5), int(W * 1.5)))[..., None]
    desk = np.clip(np.array([120, 85, 60], np.float32) + noise, 0, 255).astype(np.uint8)
    y0, x0 = (desk.shape[0] - H) // 2, (desk.shape[1] - W) // 2
    desk[y0:y0 + H, x0:x0 + W] = img
    return desk


def test_a_good_frontal_photo_is_ok_on_every_check(analyzer):
    got = vet(analyzer, photo("deepface_img17.jpg"), "deepface_img17.jpg")
    assert set(got) == set(sv.CHECKS) - {"head_room"}  # a head-mode check
    got = vet(analyzer, photo("deepface_img17.jpg"), "deepface_img17.jpg", mode="head")
    assert set(got) == set(sv.CHECKS)
    assert {c: f.outcome for c, f in got.items() if f.outcome != "ok"} == {}
    assert 190 < got["face_size"].value < 235 and got["upscale"].value == pytest.approx(PLATE_FACE_PX / got["face_size"].value, rel=1e-2)
    assert all("deepface_img17.jpg" in f.text for f in got.values())


def test_a_40px_face_warns_small_and_names_the_upscale(analyzer):
    rgb = photo("face_recognition_obama.jpg")
    fw = sv.face_width(largest(analyzer, rgb).landmarks)
    s = 40.0 / fw
    small = cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), interpolation=cv2.INTER_AREA)
    got = vet(analyzer, small, "obama_small.jpg", hands=False)
    assert got["face_size"].outcome == "warn" and 30 < got["face_size"].value < 50
    up = got["upscale"]
    assert up.outcome == "warn" and up.value == pytest.approx(PLATE_FACE_PX / got["face_size"].value, rel=0.02) and up.value > 4.5
    assert f"{up.value:.1f}×" in up.text and "obama_small.jpg" in up.text
    # without the plate there is nothing to compare with: recorded, not warned
    assert vet(analyzer, small, hands=False, plate_face_px=None)["upscale"].outcome == "ok"


@pytest.mark.parametrize("name", ["deepface_img17.jpg", "face_recognition_obama.jpg", "deepface_img45.jpg", "facexlib_test2.jpg"])
@pytest.mark.parametrize("how", ["gaussian", "down_up"])
def test_a_face_blurred_4x_warns_blur(analyzer, name, how):
    rgb = photo(name)
    sharp = vet(analyzer, rgb, name, hands=False)["blur"]
    h, w = rgb.shape[:2]
    if how == "gaussian":
        soft = cv2.GaussianBlur(rgb, (0, 0), 4.0)
    else:
        soft = cv2.resize(cv2.resize(rgb, (w // 4, h // 4), interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_CUBIC)
    blurred = vet(analyzer, soft, name, hands=False)["blur"]
    assert sharp.outcome == "ok" and blurred.outcome == "warn", (sharp, blurred)
    assert blurred.value < sharp.value / 2.5 and "blurred" in blurred.text


@pytest.mark.parametrize("name", ["deepface_img17.jpg", "aniportrait_Aragaki.png"])
def test_a_grey_scale_copy_warns_black_and_white(analyzer, name):
    rgb = photo(name)
    grey = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert vet(analyzer, rgb, hands=False)["colour"].outcome == "ok"
    got = vet(analyzer, grey, name, hands=False)["colour"]
    assert got.outcome == "warn" and got.value < 0.5 and "black-and-white" in got.text


def cheek_patch(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """A coloured object over one cheek, beside the mouth, off the face's midline."""
    out = rgb.copy()
    fw = sv.face_width(lm)
    x, y = lm[132, :2] * 0.5 + lm[61, :2] * 0.5
    cv2.ellipse(out, (int(x), int(y)), (int(0.16 * fw), int(0.1 * fw)), 20, 0, 360, PATCH_RGB, -1, cv2.LINE_AA)
    return out


PATCH_RGB = (150, 60, 200)
OCCLUDED = ["face_recognition_obama.jpg", "skimage_astronaut.png", "deepface_img45.jpg", "facexlib_test2.jpg"]


@pytest.mark.parametrize("name", OCCLUDED)
@pytest.mark.parametrize("occluder", [microphone, glove])
def test_an_object_over_the_mouth_is_refused(analyzer, name, occluder):
    """Across the face's middle nothing on the other side can replace what it hides."""
    rgb = photo(name)
    assert vet(analyzer, rgb, hands=False)["occluder"].outcome == "ok"
    covered = occluder(rgb, largest(analyzer, rgb).landmarks)
    got = vet(analyzer, covered, name)["occluder"]
    assert got.outcome == "refuse" and got.value > 1.0 and "across its middle" in got.text and name in got.text, got
    with pytest.raises(InputError, match="unobstructed"):
        sv.raise_if_refused(list(vet(analyzer, covered, name).values()))


@pytest.mark.parametrize("name", OCCLUDED)
def test_an_object_over_one_cheek_is_taken_out_from_the_other_side(analyzer, name):
    rgb = photo(name)
    covered = cheek_patch(rgb, largest(analyzer, rgb).landmarks)
    got = vet(analyzer, covered, name)["occluder"]
    assert got.outcome == "warn" and "taken out" in got.text, got
    lm = largest(analyzer, covered).landmarks
    repair = sv.remove_occluders(covered, lm, hands=sv.detect_hands(covered))
    assert repair is not None and repair.unfilled_pct == 0.0
    patch = np.any(covered != rgb, -1)
    before = np.abs(covered.astype(float) - rgb)[patch].mean()
    after = np.abs(repair.rgb.astype(float) - rgb)[patch].mean()
    assert after < 0.4 * before, (before, after)  # the cheek is back, close to what the object hid
    left = np.linalg.norm(repair.rgb[patch].astype(float) - PATCH_RGB, axis=-1) < 40
    assert left.mean() < 0.02, left.mean()  # none of the object's colour is left
    x0, y0, x1, y1 = repair.box
    outside = np.ones(patch.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(repair.rgb[outside], covered[outside]) and not patch[outside].any()


@pytest.mark.slow
def test_no_photo_of_the_shared_set_is_repaired(analyzer):
    """Source repair changes the person's own pixels: it must not fire on a clean photo (the one
    false alarm of the occluder check, a hand-tinted photo's grey jaw, is warned and kept)."""
    repaired = []
    for path in sorted(IMAGES.iterdir()):
        rgb = photo(path.name)
        faces = analyzer.detect(rgb)
        if faces and sv.remove_occluders(rgb, largest(analyzer, rgb).landmarks, hands=sv.detect_hands(rgb)) is not None:
            repaired.append(path.name)
    assert repaired == []


def test_a_group_photo_is_refused_without_source_face_and_vetted_with_it(analyzer):
    rgb = photo("insightface_t1.jpg")
    got = vet(analyzer, rgb, "insightface_t1.jpg", hands=False)
    assert got["faces"].outcome == "refuse" and got["faces"].value == 6
    assert "insightface_t1.jpg" in got["faces"].text and "--source-face index:N" in got["faces"].text
    with pytest.raises(AmbiguousFaceError, match="insightface_t1.jpg"):
        sv.raise_if_refused(list(got.values()))
    chosen = vet(analyzer, rgb, "insightface_t1.jpg", hands=False, source_face="index:0")
    assert chosen["faces"].outcome == "ok" and not sv.refusals(list(chosen.values()))
    sv.raise_if_refused(list(chosen.values()))
    with pytest.raises(UsageError, match="index:9"):
        vet(analyzer, rgb, hands=False, source_face="index:9")


def test_a_photo_without_a_face_is_refused(analyzer):
    import skimage.data

    got = sv.vet_source(np.ascontiguousarray(skimage.data.coffee()), [], name="coffee.png")
    assert [(f.check, f.outcome) for f in got] == [("faces", "refuse")]
    with pytest.raises(NoFaceError, match="source 'coffee.png': no face found"):
        sv.raise_if_refused(got)


@dataclass
class _Face:
    landmarks: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def _turned(face, deg: float) -> _Face:
    lm = np.asarray(face.landmarks, np.float64).copy()
    c = lm.mean(0)
    a = np.radians(deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    lm = (lm - c) @ rot.T + c
    return _Face(lm.astype(np.float32), face.box)


def test_a_near_profile_is_refused_and_a_three_quarter_view_warned(analyzer):
    rgb = photo("deepface_img17.jpg")
    face = largest(analyzer, rgb)
    profile = {f.check: f for f in sv.vet_source(rgb, [_turned(face, 70)], name="side.jpg")}
    assert profile["pose"].outcome == "refuse" and profile["pose"].value > 45 and "profile" in profile["pose"].text
    with pytest.raises(UnsupportedMediaError, match="source 'side.jpg': face is in profile"):
        sv.raise_if_refused(list(profile.values()))
    three_quarter = {f.check: f for f in sv.vet_source(rgb, [_turned(face, 36)], name="tq.jpg")}
    assert three_quarter["pose"].outcome == "warn" and 30 < three_quarter["pose"].value < 45


def test_a_wide_open_mouth_warns_expression(analyzer):
    got = vet(analyzer, photo("liveportrait_d9.jpg"), "liveportrait_d9.jpg", hands=False)["expression"]
    assert got.outcome == "warn" and got.value > 0.4 and "mouth wide open" in got.text
    assert vet(analyzer, photo("deepface_img25.jpg"), hands=False)["expression"].outcome == "ok"


@pytest.mark.slow
def test_the_print_heuristic_flags_a_photographed_print_and_none_of_the_shared_photos(analyzer):
    for name in ("face_recognition_obama.jpg", "deepface_img45.jpg", "facexlib_test2.jpg"):
        printed = photographed_print(photo(name))
        assert vet(analyzer, printed, name, hands=False)["print"].outcome == "warn", name
    flagged = []
    for path in sorted(IMAGES.iterdir()):
        rgb = read_image(path, role="source")
        faces = analyzer.detect(rgb)
        lm = max(faces, key=lambda f: f.area).landmarks
        m = sv.print_cues(rgb, np.asarray(lm, np.float64))
        if sv.print_flagged({**m}) >= sv.DEFAULT_THRESHOLDS.print_cues_needed:
            flagged.append(path.name)
    assert flagged == []


def test_the_plate_face_width_comes_from_a_few_opening_frames():
    from recast.media import read_frames

    frames = read_frames(VIDEOS / "aniportrait_pose_ref_video.mp4", role="plate")
    try:
        px = sv.plate_face_px(frames, step=5)
    finally:
        frames.close()
    assert px == pytest.approx(PLATE_FACE_PX, rel=0.08)


def test_submission_refuses_a_group_photo_in_one_line_and_prints_each_warning(capsys):
    from recast.contracts import Mode, ShotParams
    from recast.services.shots import validate_submission

    plate = str(VIDEOS / "aniportrait_pose_ref_video.mp4")
    group = str(IMAGES / "insightface_t1.jpg")
    with pytest.raises(AmbiguousFaceError) as ei:
        validate_submission(plate=plate, sources=[group], params=ShotParams(mode=Mode.face))
    assert "\n" not in str(ei.value) and group in str(ei.value)

    small = str(IMAGES / "skimage_astronaut.png")
    validate_submission(plate=plate, sources=[small], params=ShotParams(mode=Mode.face))
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[recast] source:")]
    assert lines and all(x.startswith(f"[recast] source: {small}: ") for x in lines)
    assert any("enlarged 2." in x for x in lines), lines


def test_a_photo_cropped_tight_around_the_face_warns_head_room_in_head_mode(analyzer):
    """The photo's border cuts the hair: the head would end in a straight edge. A warning in
    head mode (the swap still runs), nothing in face mode; the whole photo is ok; cut at the
    face itself, it is refused (the next test)."""
    rgb = photo("deepface_img17.jpg")
    lm = largest(analyzer, rgb).landmarks
    x0, y0 = lm[:, :2].min(0).astype(int)
    x1, y1 = lm[:, :2].max(0).astype(int)
    tight = np.ascontiguousarray(rgb[max(0, y0 - 10):y1 + 40, max(0, x0 - 10):x1 + 10])  # forehead top and temples cut
    assert vet(analyzer, tight, "tight.jpg", mode="head", hands=False)["head_room"].outcome == "refuse"
    top_cut = np.ascontiguousarray(rgb[max(0, y0 - 10):])  # the hair above the forehead cut, the sides whole
    got = vet(analyzer, top_cut, "tight.jpg", mode="head", hands=False)
    room = got["head_room"]
    assert room.outcome == "warn" and sv.HEAD_ROOM_REFUSE <= room.value < sv.HEAD_ROOM_WARN
    assert "tight.jpg" in room.text and "straight edge" in room.text
    assert "head_room" not in vet(analyzer, tight, "tight.jpg", mode="face", hands=False)
    whole = vet(analyzer, rgb, "whole.jpg", mode="head", hands=False)["head_room"]
    assert whole.outcome == "ok" and whole.value == 1.0


@pytest.mark.parametrize("name", ["deca_id08456-SEvpX9LhEP4-000957.jpg", "insightface_Tom_Hanks_54745.png"])
def test_a_face_crop_without_the_head_is_refused_in_head_mode_and_fine_in_face_mode(analyzer, name):
    """A dataset's aligned face crop (224 or 112 px, the hair and ears outside it): the head swap
    pasted a square of face with straight edges on the plate. Refused in head mode, with the way
    out named; the face swap needs only the face."""
    rgb = photo(name)
    got = vet(analyzer, rgb, name, mode="head", hands=False)
    room = got["head_room"]
    assert room.outcome == "refuse" and room.value < sv.HEAD_ROOM_REFUSE
    assert name in room.text and "not the head" in room.text and "--mode face" in room.text
    assert "head_room" not in vet(analyzer, rgb, name, mode="face", hands=False)
