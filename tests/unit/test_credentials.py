"""C2PA content credentials on real mp4/mov files, signed offline with the development CA."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from recast.errors import InputError, InputNotFoundError, UsageError
from recast.media.credentials import (
    COMPOSITE_AI_SOURCE_TYPE,
    dev_trust_anchor,
    ensure_dev_signing_identity,
    load_signing_identity,
    read_credentials,
    sign_sidecar,
    sign_video,
)


def _clip(src: Path, dst: Path, n: int = 12, codec: str = "libx264") -> Path:
    fmt = "mov" if dst.suffix == ".mov" else "mp4"
    with av.open(str(src)) as c, av.open(str(dst), "w", format=fmt) as out:
        s = None
        for i, f in enumerate(c.decode(video=0)):
            if i >= n:
                break
            if s is None:
                s = out.add_stream(codec, rate=25)
                s.width, s.height = f.width, f.height
                s.pix_fmt = "yuv422p10le" if codec == "prores_ks" else "yuv420p"
            for p in s.encode(f.reformat(format=s.pix_fmt)):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return dst


def _frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    d = tmp_path_factory.mktemp("c2pa")
    ident, created = ensure_dev_signing_identity(d)
    assert created
    again, created_again = ensure_dev_signing_identity(d)
    assert not created_again and again.cert_chain_pem == ident.cert_chain_pem
    return d, ident, dev_trust_anchor(d)


@pytest.fixture(scope="module")
def plate(media_dir, tmp_path_factory):
    return _clip(media_dir / "videos" / "liveportrait_d0.mp4", tmp_path_factory.mktemp("plate") / "plate.mp4")


def _sign(src, dst, ident, plate, **kw):
    args = dict(identity=ident, parent=plate, parent_title="plate.mp4", render_id="render-42", shot="sh010",
                models=[{"name": "classic", "version": "1", "sha256": None}], identity_name=None,
                consent=None, scratch=True)
    args.update(kw)
    sign_video(src, dst, **args)


@pytest.mark.parametrize("ext,codec", [("mp4", "libx264"), ("mov", "libx264"), ("mov", "prores_ks")])
def test_signed_file_reads_back_valid_trusted_and_still_decodes(dev, plate, media_dir, tmp_path, ext, codec):
    _, ident, ca = dev
    render = _clip(media_dir / "videos" / "liveportrait_d0.mp4", tmp_path / f"render.{ext}", n=8, codec=codec)
    out = tmp_path / f"signed.{ext}"
    _sign(render, out, ident, plate)
    r = read_credentials(out)
    assert r.present and r.valid and not r.trusted and not r.tampered
    assert r.render_id == "render-42"
    assert r.actions[:2] == ("c2pa.opened", "c2pa.edited")
    assert COMPOSITE_AI_SOURCE_TYPE in r.digital_source_types
    assert r.assertion["shot"] == "sh010"
    assert r.assertion["consent"] == {"consent": "none on record (scratch project)"}
    t = read_credentials(out, trust_anchors_pem=ca)
    assert t.valid and t.trusted
    assert _frames(out) == _frames(render) == 8


def test_consent_and_identity_recorded(dev, plate, tmp_path):
    _, ident, _ = dev
    out = tmp_path / "signed.mp4"
    consent = {"consent_id": "c-1", "scope": {"project": "P"}, "sha256": "ab" * 32}
    _sign(plate, out, ident, plate, identity_name="Ann", consent=consent, scratch=False)
    a = read_credentials(out).assertion
    assert a["identity"] == "Ann" and a["consent"] == consent and a["scratch"] is False


def test_modified_frame_bytes_read_as_tampered(dev, plate, tmp_path):
    _, ident, ca = dev
    out = tmp_path / "signed.mp4"
    _sign(plate, out, ident, plate)
    data = bytearray(out.read_bytes())
    at = data.find(b"mdat")
    assert at > 0
    for i in range(at + 200, at + 232):  # flip bytes of coded frames
        data[i] ^= 0xFF
    bad = tmp_path / "tampered.mp4"
    bad.write_bytes(bytes(data))
    r = read_credentials(bad, trust_anchors_pem=ca)
    assert r.present and r.tampered and not r.valid and not r.trusted
    assert r.render_id == "render-42"  # the manifest still says which render it claims to be


def test_unsigned_file_has_no_manifest(plate):
    r = read_credentials(plate)
    assert not r.present and not r.valid and r.render_id is None


def test_sidecar_manifest(dev, plate, tmp_path):
    _, ident, ca = dev
    side = tmp_path / "frame.c2pa"
    before = plate.read_bytes()
    sign_sidecar(plate, side, identity=ident, parent=plate, parent_title="plate.mp4", render_id="render-7",
                 shot="sh1", models=[], identity_name=None, consent=None, scratch=True)
    assert plate.read_bytes() == before
    r = read_credentials(plate, manifest=side, trust_anchors_pem=ca)
    assert r.valid and r.trusted and r.render_id == "render-7"


def test_load_signing_identity_errors(dev, tmp_path):
    d, ident, _ = dev
    loaded = load_signing_identity(d / "recast-dev-signer-chain.pem", d / "recast-dev-signer-key.pem")
    assert loaded.alg == "es256" and loaded.cert_chain_pem == ident.cert_chain_pem
    with pytest.raises(InputNotFoundError, match="nope.pem"):
        load_signing_identity(tmp_path / "nope.pem", d / "recast-dev-signer-key.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(InputError, match="junk.pem"):
        load_signing_identity(junk, d / "recast-dev-signer-key.pem")
    other, _ = ensure_dev_signing_identity(tmp_path / "other")
    with pytest.raises(UsageError, match="does not belong"):
        load_signing_identity(d / "recast-dev-signer-chain.pem", tmp_path / "other" / "recast-dev-signer-key.pem")
