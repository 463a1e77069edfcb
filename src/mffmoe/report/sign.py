"""Ed25519 signatures over a report's content (`cryptography`).

What is signed is the report's canonical JSON: every field but `signature`, keys sorted, compact
separators, UTF-8. The file is written in one fixed layout (`dumps`: sorted keys, 2-space indent, UTF-8)
and `verify` checks, by default, that the file is byte for byte that layout of what it holds: content
alone would let a byte change through that parses to the same value (the 17th digit of a float), and a
report is a document whose every byte should be as signed. The public key travels in the signature
block, so anyone can check that the report is intact; whether the signer is one you trust is a separate
question, answered by passing the signer's public key (`verify(..., public_key=...)`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from mffmoe._util.fs import atomic_write, sha256_file
from mffmoe.errors import ConfigError, MissingExtraError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "Ed25519"
PRIVATE_NAME = "mffmoe-ed25519.key"
PUBLIC_NAME = "mffmoe-ed25519.pub"
#: What `signed` says was covered (also the rule a third party needs to check the signature by hand).
COVERED = ("every field of the report except `signature`, as canonical JSON: keys sorted, separators ',' "
           "and ':', UTF-8, no ASCII escaping")


class Verification(BaseModel):
    """The outcome of `verify`: `ok`, one sentence for people (`message`) and what was checked."""

    ok: bool
    message: str
    reason: str | None = Field(None, description="unsigned | unreadable | bad_signature | not_as_written | "
                               "key_mismatch | input_mismatch; None when ok")
    public_key: str | None = Field(None, description="the signer's key (base64, raw 32 bytes)")
    key_id: str | None = Field(None, description="short id of the signer's key (SHA-256 prefix)")
    input_checked: bool = Field(False, description="a file was compared with the report's input hash")
    trusted_key: bool = Field(False, description="the signer's key was checked against one given")


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:
        raise MissingExtraError(f"signing reports needs cryptography, which is not installed ({e}): "
                                "pip install 'mffmoe[report]'") from e
    return ed25519


def canonical(report: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers: the report without `signature`, canonical JSON."""
    body = {k: v for k, v in report.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def dumps(report: Mapping[str, Any]) -> bytes:
    """The one file layout of a report: sorted keys, 2-space indent, UTF-8, a final newline. `verify`
    expects a file in exactly this layout (write reports with it, serve these bytes)."""
    return (json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def key_id(raw_public: bytes) -> str:
    """A short, stable name for a public key (first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_keypair(directory: str | os.PathLike[str], *, force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair into `directory` (made if missing): `mffmoe-ed25519.key` (PKCS#8 PEM, mode
    0600) and `mffmoe-ed25519.pub` (SubjectPublicKeyInfo PEM). An existing pair is kept unless `force`."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot make the key folder {out}: {e.strerror or e}") from None
    private, public = out / PRIVATE_NAME, out / PUBLIC_NAME
    if not force and (private.exists() or public.exists()):
        raise ConfigError(f"{private if private.exists() else public} exists; keep it, or pass --force to "
                          "replace the key pair")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(private.with_name(private.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.chmod(private.with_name(private.name + ".tmp"), 0o600)
        os.replace(private.with_name(private.name + ".tmp"), private)
        with atomic_write(public, "wb") as f:
            f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    except OSError as e:
        raise ConfigError(f"cannot write the key pair in {out}: {e.strerror or e}") from None
    return private, public


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (as `generate_keypair` writes); a ConfigError otherwise."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"signing key {path}: {e.strerror or e}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"signing key {path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"signing key {path}: a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(source: str | os.PathLike[str]) -> bytes:
    """The raw 32 bytes of an Ed25519 public key from a file: PEM (as `generate_keypair` writes) or the
    base64 of the raw key (as a report's signature block holds it). A ConfigError otherwise."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(source).read_bytes()
    except OSError as e:
        raise ConfigError(f"public key {source}: {e.strerror or e}") from None
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"public key {source}: not a PEM public key ({e})") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ConfigError(f"public key {source}: a {type(key).__name__}, not an Ed25519 key")
        return _raw_public(key)
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"public key {source}: neither a PEM public key nor the base64 of a raw Ed25519 key")
    return raw


def sign(report: Mapping[str, Any], private_key_path: str | os.PathLike[str] | Ed25519PrivateKey,
         ) -> dict[str, Any]:
    """`report` with a `signature` block: {algorithm, public_key (base64 raw), key_id, signed (what was
    covered), sha256 (of the covered bytes), value (base64)}. An existing signature is replaced."""
    key = private_key_path if not isinstance(private_key_path, str | os.PathLike) else \
        load_private_key(private_key_path)
    body = canonical(report)
    raw = _raw_public(key.public_key())
    out = {k: v for k, v in report.items() if k != "signature"}
    out["signature"] = {"algorithm": ALGORITHM, "public_key": base64.b64encode(raw).decode("ascii"),
                        "key_id": key_id(raw), "signed": COVERED, "sha256": hashlib.sha256(body).hexdigest(),
                        "value": base64.b64encode(key.sign(body)).decode("ascii")}
    return out


def _fail(reason: str, message: str, **extra: Any) -> Verification:
    return Verification(ok=False, reason=reason, message=message, **extra)


def verify(report_bytes: bytes, *, input_file: str | os.PathLike[str] | None = None,
           public_key: bytes | str | os.PathLike[str] | None = None, strict: bool = True) -> Verification:
    """Check a JSON report's signature (and, given `input_file`, that the file is the one it was made
    from; given `public_key` (raw 32 bytes or a key file), that this key signed it). `strict` (default):
    the bytes must also be exactly `dumps` of what they hold, so that no byte can change unnoticed;
    `strict=False` checks the content only (for a report that was re-serialised on purpose). Never
    raises for a bad report: the Verification says what is wrong, in one sentence."""
    ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    try:
        report = json.loads(report_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return _fail("unreadable", f"not a JSON report (it may have been changed or truncated): {e}")
    if not isinstance(report, dict):
        return _fail("unreadable", "not a JSON report: expected an object")
    block = report.get("signature")
    if block is None:
        if any(isinstance(v, dict) and {"algorithm", "value"} <= set(v) for v in report.values()):
            return _fail("bad_signature", "bad signature: the signature block was renamed, so the report was "
                         "changed after it was signed")
        return _fail("unsigned", "the report is not signed (made without --sign)")
    if not isinstance(block, dict) or block.get("algorithm") != ALGORITHM:
        algorithm = block.get("algorithm") if isinstance(block, dict) else None
        return _fail("unreadable", f"unsupported signature block (algorithm {algorithm!r}, expected {ALGORITHM})")
    try:
        raw = base64.b64decode(str(block.get("public_key", "")), validate=True)
        value = base64.b64decode(str(block.get("value", "")), validate=True)
        signer = ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        return _fail("bad_signature", f"the signature block is damaged ({e}): the report was changed")
    # base64 leaves the last character's spare bits free: a changed one decodes to the same bytes
    if (base64.b64encode(raw).decode("ascii") != block.get("public_key")
            or base64.b64encode(value).decode("ascii") != block.get("value")):
        return _fail("bad_signature", "the signature block is damaged (not as it was encoded): the report was "
                     "changed after it was signed")
    who = {"public_key": block["public_key"], "key_id": key_id(raw)}
    trusted = False
    if public_key is not None:
        expected = public_key if isinstance(public_key, bytes) else load_public_key(public_key)
        if expected != raw:
            return _fail("key_mismatch", f"signed by another key (key {key_id(raw)}, expected "
                         f"{key_id(expected)}): not signed by the key given", **who)
        trusted = True
    body = canonical(report)
    try:
        signer.verify(value, body)
    except InvalidSignature:
        return _fail("bad_signature", "bad signature: the report was changed after it was signed "
                     "(or the signature does not belong to it)", trusted_key=trusted, **who)
    # the block's own descriptive fields are not under the signature: they must say what is true
    if (block.get("sha256") != hashlib.sha256(body).hexdigest() or block.get("key_id") != key_id(raw)
            or block.get("signed") != COVERED):
        return _fail("bad_signature", "bad signature block: its sha256, key_id or signed field was changed "
                     "after signing", trusted_key=trusted, **who)
    if strict and report_bytes != dumps(report):
        return _fail("not_as_written", "the file is not byte for byte as it was signed: it was changed or "
                     "reformatted after signing (its parsed content still matches the signature)",
                     trusted_key=trusted, **who)
    checked = False
    if input_file is not None:
        claimed = (report.get("input") or {}).get("sha256")
        try:
            actual = sha256_file(input_file)
        except OSError as e:
            return _fail("input_mismatch", f"cannot read {input_file}: {e.strerror or e}", trusted_key=trusted, **who)
        if actual != claimed:
            return _fail("input_mismatch", f"the file is not the one the report was made from: {input_file} "
                         f"has SHA-256 {actual}, the report's input has {claimed}", trusted_key=trusted, **who)
        checked = True
    parts = [f"signature valid: Ed25519, signed by the key given (key id {key_id(raw)})" if trusted else
             f"signature valid: Ed25519, key id {key_id(raw)} (pass --key to check who signed it)"]
    if checked:
        parts.append(f"{Path(input_file).name if input_file else ''} matches the report's input (SHA-256)")
    return Verification(ok=True, message="; ".join(parts), input_checked=checked, trusted_key=trusted, **who)
