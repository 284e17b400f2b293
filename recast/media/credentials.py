"""C2PA content credentials on deliverables: signing, reading back, and a development CA.

Signing uses c2pa-python offline (no timestamp authority, no OCSP, no remote manifests). The
manifest names the plate as parent ingredient, records ``c2pa.opened`` then ``c2pa.edited``
with digitalSourceType compositeWithTrainedAlgorithmicMedia, and carries recast's own
assertion ``com.recast.provenance`` (render id, shot, models, identity, consent).

c2pa rejects a lone self-signed certificate; what it accepts is a root CA that signs an ES256
leaf with digitalSignature and the emailProtection EKU. :func:`ensure_dev_signing_identity`
creates exactly that, once, for studios that have not configured their own certificate.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import c2pa

from recast.errors import InputError, InputNotFoundError, OutputPathError, UsageError

__all__ = [
    "SigningIdentity",
    "CredentialReading",
    "ensure_dev_signing_identity",
    "load_signing_identity",
    "missing_studio_credentials",
    "require_studio_credentials",
    "signing_identity",
    "watermark_seed",
    "trust_anchors",
    "sign_video",
    "sign_sidecar",
    "read_credentials",
    "PROVENANCE_LABEL",
    "COMPOSITE_AI_SOURCE_TYPE",
]

PROVENANCE_LABEL = "com.recast.provenance"
COMPOSITE_AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
SCRATCH_CONSENT = {"consent": "none on record (scratch project)"}
_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".jpg": "image/jpeg",
         ".jpeg": "image/jpeg", ".png": "image/png", ".tif": "image/tiff", ".tiff": "image/tiff"}
_DEV_CA = "recast-dev-root-ca.pem"
_DEV_CERT = "recast-dev-signer-chain.pem"
_DEV_KEY = "recast-dev-signer-key.pem"
# validation codes that say the bytes no longer match what was signed
_TAMPER_MARKERS = ("mismatch", "dataHash", "bmffHash.mismatch", "boxHash", "hashedURI.mismatch")
# Reading never goes to the network: deliverables are checked on air-gapped machines too.
_OFFLINE = {"verify": {"ocsp_fetch": False, "remote_manifest_fetch": False}}


@dataclass(frozen=True)
class SigningIdentity:
    """A signing certificate chain (leaf first, PEM) and its private key (PEM)."""

    cert_chain_pem: bytes
    private_key_pem: bytes
    alg: str = "es256"
    description: str = ""


@dataclass(frozen=True)
class CredentialReading:
    """What :func:`read_credentials` found.

    ``present``: a manifest is there. ``valid``: its signature and content hashes check out
    (trust aside). ``trusted``: the signer chains to one of the given trust anchors.
    ``tampered``: a manifest is present but the content no longer matches it.
    """

    present: bool
    valid: bool
    trusted: bool
    tampered: bool
    render_id: str | None
    assertion: dict | None
    message: str
    actions: tuple[str, ...] = ()
    digital_source_types: tuple[str, ...] = ()
    signer: str | None = None


# --- identities -------------------------------------------------------------------------------
def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_dev_signing_identity(directory: Path) -> tuple[SigningIdentity, bool]:
    """Load, or create once, a development root CA and an ES256 signing certificate under it.

    Returns ``(identity, created_now)`` so the caller can tell the user a development
    certificate was made. The CA certificate (``recast-dev-root-ca.pem``) is what
    ``recast verify`` needs as a trust anchor to call these signatures trusted. Development
    credentials prove nothing to anyone outside the studio: configure a real certificate.
    """
    directory = Path(directory)
    cert_path, key_path, ca_path = directory / _DEV_CERT, directory / _DEV_KEY, directory / _DEV_CA
    if cert_path.is_file() and key_path.is_file() and ca_path.is_file():
        ident = load_signing_identity(cert_path, key_path)
        return SigningIdentity(ident.cert_chain_pem, ident.private_key_pem, ident.alg, "recast development CA (not for delivery)"), False
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"signing identity directory '{directory}': cannot be created ({exc.strerror or exc})") from exc

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "recast development")])

    def usage(**on: bool) -> x509.KeyUsage:
        keys = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
        return x509.KeyUsage(**{k: on.get(k, False) for k in keys})

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("recast development root CA")).issuer_name(name("recast development root CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(name("recast development signer")).issuer_name(ca.subject)
        .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(digital_signature=True), critical=True)
        # c2pa requires an EKU it recognises; emailProtection is the one it accepts by default
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # the CA key is not kept: nothing else should ever be signed by this development root
    _write_private(key_path, key_pem)
    cert_path.write_bytes(chain)
    ca_path.write_bytes(ca.public_bytes(pem))
    return SigningIdentity(chain, key_pem, "es256", "recast development CA (not for delivery)"), True


def dev_trust_anchor(directory: Path) -> bytes | None:
    """The development root CA certificate (PEM) under ``directory``, if one was created."""
    p = Path(directory) / _DEV_CA
    return p.read_bytes() if p.is_file() else None


def missing_studio_credentials() -> list[str]:
    """The variables a service still lacks of the studio's signing certificate, its key and the
    watermark seed (empty when all are set)."""
    from recast.settings import get_settings

    settings = get_settings()
    return [name for name, value in (("RECAST_C2PA_CERT", settings.c2pa_cert), ("RECAST_C2PA_KEY", settings.c2pa_key),
                                     ("RECAST_WATERMARK_SEED", settings.watermark_seed)) if value is None]


def require_studio_credentials(what: str = "recast", *, serving: str | None = None) -> None:
    """Refuse (UsageError, one line naming the variables) to run as a service without the
    studio's signing certificate, key and watermark seed.

    With PostgreSQL or S3 configured, renders are made on several machines and verified on any:
    a development CA created per machine signs renders the others cannot verify, and the built-in
    watermark key is the same for every studio. Called by ``recast serve`` and ``recast worker``
    at start, by each shot run before any work, and by signing and marking themselves. A
    one-machine setup (SQLite and a local store) keeps the development defaults, except in
    ``recast serve`` and ``recast worker``: ``serving`` says why such a process is a service
    whatever its storage (it renders or hands out renders for the studio).
    """
    from recast.settings import get_settings

    settings = get_settings()
    why = settings.runs_as_service or serving
    if why is None:
        return
    missing = missing_studio_credentials()
    if missing:
        raise UsageError(f"{what}: set {', '.join(missing)}: recast runs as a service here ({why}) and every machine must sign "
                         "and watermark with the studio's own certificate, key and seed (see deploy/README.md)")
    from recast.models.watermark import parse_seed

    parse_seed(settings.watermark_seed)


def watermark_seed() -> int:
    """The studio's watermark seed (RECAST_WATERMARK_SEED); the public development seed on a
    one-machine setup without one; refused when recast runs as a service without one."""
    from recast.models.watermark import DEVELOPMENT_SEED, parse_seed
    from recast.settings import get_settings

    seed = get_settings().watermark_seed
    if seed is None:
        require_studio_credentials("watermark")
        return DEVELOPMENT_SEED
    try:
        return parse_seed(seed)
    except UsageError as exc:
        raise UsageError(f"RECAST_WATERMARK_SEED: {exc}") from None


def signing_identity() -> SigningIdentity:
    """The studio's signing certificate (RECAST_C2PA_CERT / RECAST_C2PA_KEY), or, on a one-machine
    setup, a development CA created under the data directory on first use (a service without
    them is refused: :func:`require_studio_credentials`)."""
    import sys

    from recast.settings import get_settings

    settings = get_settings()
    if settings.c2pa_cert or settings.c2pa_key:
        if not (settings.c2pa_cert and settings.c2pa_key):
            raise UsageError("set both RECAST_C2PA_CERT and RECAST_C2PA_KEY (the certificate chain and its private key)")
        return load_signing_identity(settings.c2pa_cert, settings.c2pa_key)
    require_studio_credentials("C2PA signing")
    directory = settings.resolved_data_dir / "c2pa"
    identity, created = ensure_dev_signing_identity(directory)
    if created:
        # a progress line in the pipeline's format (stderr): a studio must notice it is not
        # signing with its own certificate
        print(f"[recast] render: created a DEVELOPMENT signing CA and certificate under {directory} "
              "(set RECAST_C2PA_CERT and RECAST_C2PA_KEY to sign with the studio's certificate)", file=sys.stderr, flush=True)
    return identity


def trust_anchors() -> bytes | None:
    """The CA certificates (PEM) a verification trusts: RECAST_C2PA_TRUST_ANCHORS, else the
    development CA of the data directory (None when neither exists)."""
    from recast.settings import get_settings

    settings = get_settings()
    if settings.c2pa_trust_anchors:
        return Path(settings.c2pa_trust_anchors).read_bytes()
    return dev_trust_anchor(settings.resolved_data_dir / "c2pa")


def load_signing_identity(cert_path: Path, key_path: Path) -> SigningIdentity:
    """Load a studio certificate chain (PEM, leaf first) and its private key (PEM).

    Raises InputNotFoundError / InputError naming the file when it is missing, unreadable or
    not PEM, and UsageError when the key does not belong to the certificate or the algorithm
    is not one c2pa signs with.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    def read(path: Path, what: str) -> bytes:
        path = Path(path)
        if not path.is_file():
            raise InputNotFoundError(f"{what} '{path}': file not found")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InputError(f"{what} '{path}': cannot be read ({exc.strerror or exc})") from exc

    chain = read(cert_path, "C2PA certificate")
    key_pem = read(key_path, "C2PA private key")
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise InputError(f"C2PA certificate '{cert_path}': not a PEM certificate chain ({exc})") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"C2PA private key '{key_path}': not an unencrypted PEM private key ({exc})") from exc
    pub = certs[0].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) != pub:
        raise UsageError(f"C2PA private key '{key_path}' does not belong to the certificate in '{cert_path}'")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {256: "es256", 384: "es384", 521: "es512"}.get(key.curve.key_size)
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        alg = "ed25519"
    elif isinstance(key, rsa.RSAPrivateKey):
        alg = "ps256"
    else:
        alg = None
    if alg is None:
        raise UsageError(f"C2PA private key '{key_path}': key type not supported for C2PA signing")
    subject = certs[0].subject.rfc4514_string()
    return SigningIdentity(chain, key_pem, alg, f"certificate {subject} ({cert_path})")


# --- signing ----------------------------------------------------------------------------------
def _mime(path: Path, role: str) -> str:
    mime = _MIME.get(Path(path).suffix.lower())
    if mime is None:
        raise UsageError(f"{role} '{path}': C2PA signing supports {', '.join(sorted(_MIME))} files")
    return mime


def _manifest(dst: Path, *, render_id: str, shot: str, models: list[dict], identity_name: str | None,
              consent: dict | None, scratch: bool) -> dict[str, Any]:
    from recast import __version__ as version

    provenance = {
        "render_id": render_id,
        "shot": shot,
        "models": list(models),
        "identity": identity_name,
        "consent": SCRATCH_CONSENT if scratch or consent is None else consent,
        "scratch": bool(scratch),
    }
    return {
        "claim_generator_info": [{"name": "recast", "version": str(version)}],
        "title": Path(dst).name,
        "format": _mime(dst, "output"),
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [
                # the plate, opened: c2pa requires the first action to be opened or created
                {"action": "c2pa.opened", "parameters": {"ingredientIds": ["plate"]}},
                {"action": "c2pa.edited", "digitalSourceType": COMPOSITE_AI_SOURCE_TYPE,
                 "softwareAgent": {"name": "recast", "version": str(version)},
                 "description": "head/face replaced by a trained model"},
            ]}},
            {"label": PROVENANCE_LABEL, "data": provenance},
        ],
    }


def _builder(parent: Path, parent_title: str, manifest: dict) -> c2pa.Builder:
    parent = Path(parent)
    if not parent.is_file():
        raise InputNotFoundError(f"plate '{parent}': file not found")
    builder = c2pa.Builder(manifest)
    with open(parent, "rb") as f:
        builder.add_ingredient({"title": parent_title, "relationship": "parentOf", "label": "plate"},
                               _mime(parent, "plate"), f)
    return builder


def _signer(identity: SigningIdentity) -> c2pa.Signer:
    try:
        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(identity.alg.encode(), identity.cert_chain_pem,
                                                         identity.private_key_pem, None))
    except c2pa.C2paError as exc:
        raise UsageError(f"C2PA signer ({identity.description or identity.alg}): rejected ({exc})") from exc


def sign_video(src: Path, dst: Path, *, identity: SigningIdentity, parent: Path, parent_title: str,
               render_id: str, shot: str, models: list[dict], identity_name: str | None,
               consent: dict | None, scratch: bool) -> None:
    """Write ``dst``: ``src`` (mp4 or mov) with an embedded, signed C2PA manifest.

    ``src`` and ``dst`` may be the same path. ``dst`` is written under a temporary name and
    renamed, so it either holds a signed file or is left as it was. ``consent`` is recorded as
    given; with ``scratch`` (or no consent) the manifest says no consent was on record.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputNotFoundError(f"video to sign '{src}': file not found")
    mime = _mime(src, "video to sign")
    manifest = _manifest(dst, render_id=render_id, shot=shot, models=models, identity_name=identity_name,
                         consent=consent, scratch=scratch)
    builder = _builder(parent, parent_title, manifest)
    signer = _signer(identity)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".c2pa" + dst.suffix)
    except OSError as exc:
        raise OutputPathError(f"output '{dst}': not writable ({exc.strerror or exc})") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with open(src, "rb") as s, open(tmp, "w+b") as d:
            builder.sign(signer, mime, s, d)
        os.replace(tmp, dst)
    except c2pa.C2paError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"video to sign '{src}': C2PA signing failed ({exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        builder.close()
        signer.close()


def sign_sidecar(manifest_for: Path, out_manifest: Path, *, identity: SigningIdentity, parent: Path,
                 parent_title: str, render_id: str, shot: str, models: list[dict],
                 identity_name: str | None, consent: dict | None, scratch: bool) -> None:
    """Write a detached (sidecar) C2PA manifest ``out_manifest`` (.c2pa) bound to ``manifest_for``.

    ``manifest_for`` is left untouched. For an image sequence, sign each frame (a manifest
    binds the bytes of one asset) or one representative file; read back with
    ``read_credentials(frame, manifest=out_manifest)``.
    """
    manifest_for, out_manifest = Path(manifest_for), Path(out_manifest)
    if not manifest_for.is_file():
        raise InputNotFoundError(f"file to sign '{manifest_for}': file not found")
    mime = _mime(manifest_for, "file to sign")
    manifest = _manifest(manifest_for, render_id=render_id, shot=shot, models=models,
                         identity_name=identity_name, consent=consent, scratch=scratch)
    builder = _builder(parent, parent_title, manifest)
    builder.set_no_embed()
    signer = _signer(identity)
    import io

    try:
        with open(manifest_for, "rb") as s:
            data = builder.sign(signer, mime, s, io.BytesIO())
    except c2pa.C2paError as exc:
        raise InputError(f"file to sign '{manifest_for}': C2PA signing failed ({exc})") from exc
    finally:
        builder.close()
        signer.close()
    tmp = out_manifest.with_name(f".{out_manifest.name}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out_manifest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputPathError(f"sidecar manifest '{out_manifest}': cannot be written ({exc.strerror or exc})") from exc


# --- reading ----------------------------------------------------------------------------------
def _codes(results: dict | None, kind: str) -> list[dict]:
    if not results:
        return []
    active = results.get("activeManifest") or {}
    return list(active.get(kind) or [])


def read_credentials(path: Path, *, trust_anchors_pem: bytes | None = None,
                     manifest: Path | None = None) -> CredentialReading:
    """Read and validate the C2PA manifest of ``path`` (embedded, or the sidecar ``manifest``).

    Trust is decided only against ``trust_anchors_pem`` (PEM certificates, e.g. the studio or
    development root CA); without it a good signature reads ``valid`` but not ``trusted``.
    A file that is not media c2pa knows raises InputError; a file with no manifest reads
    ``present=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"file to verify '{path}': file not found")
    settings: dict[str, Any] = json.loads(json.dumps(_OFFLINE))
    if trust_anchors_pem:
        settings["trust"] = {"trust_anchors": trust_anchors_pem.decode("ascii", "replace")}
        settings["verify"]["verify_trust"] = True
    try:
        ctx = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
    except c2pa.C2paError as exc:
        raise InputError(f"C2PA trust anchors: rejected ({exc})") from exc
    mime = _MIME.get(path.suffix.lower())
    try:
        with open(path, "rb") as f:
            side = Path(manifest).read_bytes() if manifest is not None else None
            try:
                reader = c2pa.Reader(mime, f, side, context=ctx)
            except c2pa.C2paError.ManifestNotFound:
                return CredentialReading(False, False, False, False, None, None, "no C2PA manifest")
            with reader:
                state = reader.get_validation_state() or ""
                results = reader.get_validation_results()
                active = reader.get_active_manifest() or {}
    except c2pa.C2paError as exc:
        msg = str(exc)
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in msg:
            return CredentialReading(False, False, False, False, None, None, "no C2PA manifest")
        raise InputError(f"file to verify '{path}': C2PA manifest unreadable ({msg})") from exc
    finally:
        ctx.close()

    failures = _codes(results, "failure")
    fail_codes = [str(x.get("code", "")) for x in failures]
    trust_fail = [c for c in fail_codes if c.startswith("signingCredential.untrusted")]
    other_fail = [c for c in fail_codes if c not in trust_fail]
    tampered = any(any(m in c for m in _TAMPER_MARKERS) for c in other_fail)
    valid = not other_fail and state in ("Valid", "Trusted")
    trusted = valid and state == "Trusted" and trust_anchors_pem is not None

    assertion = None
    actions: list[str] = []
    sources: list[str] = []
    for a in active.get("assertions") or []:
        label = a.get("label", "")
        if label == PROVENANCE_LABEL:
            assertion = a.get("data")
        elif label.startswith("c2pa.actions"):
            for act in (a.get("data") or {}).get("actions") or []:
                actions.append(str(act.get("action")))
                if act.get("digitalSourceType"):
                    sources.append(str(act["digitalSourceType"]))
    render_id = assertion.get("render_id") if isinstance(assertion, dict) else None
    sig = active.get("signature_info") or {}
    signer = sig.get("common_name") or sig.get("issuer")
    if tampered:
        message = "content does not match its C2PA manifest (" + ", ".join(other_fail) + ")"
    elif not valid:
        message = f"C2PA manifest invalid ({', '.join(other_fail) or state})"
    elif trusted:
        message = f"C2PA manifest valid and trusted (signed by {signer})"
    else:
        message = f"C2PA manifest valid, signer not trusted (signed by {signer})"
    return CredentialReading(True, valid, trusted, tampered, render_id, assertion, message,
                             tuple(actions), tuple(sources), signer)
