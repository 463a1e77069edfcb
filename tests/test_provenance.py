"""Provenance: each metadata source read from files made here, reported with its source, never a verdict."""
from __future__ import annotations

import datetime as dt
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, PngImagePlugin

from mffmoe.provenance import read_provenance

IPTC_AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
A1111 = ("a photo of a cat on a sofa\nNegative prompt: blurry\n"
         "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 64x64, Model: sd_xl_base_1.0")


def _xmp(source_type: str, creator_tool: str = "Test Tool 1.0") -> str:
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
            ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
            ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
            f' xmp:CreatorTool="{creator_tool}">'
            f'<Iptc4xmpExt:DigitalSourceType>{source_type}</Iptc4xmpExt:DigitalSourceType>'
            '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">A generated cat</rdf:li></rdf:Alt></dc:title>'
            '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def _pixels() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def _report(p) -> str:
    return "\n".join(p.report_lines())


@pytest.fixture()
def camera_jpeg(tmp_path: Path) -> Path:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    exif[0x0131] = "Firmware Version 1.8.1"
    exif.get_ifd(ExifTags.IFD.Exif)[0x9003] = "2024:05:01 10:11:12"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[1] = "N"
    gps[2] = (52.0, 22.0, 1.0)
    path = tmp_path / "camera.jpg"
    _pixels().save(path, exif=exif)
    return path


def test_jpeg_exif_camera_fields(camera_jpeg: Path) -> None:
    p = read_provenance(camera_jpeg)
    assert p.found and not p.claims_ai and p.media_kind == "image"
    assert p.exif["Make"] == "Canon" and p.exif["Model"] == "Canon EOS R5"
    assert p.exif["DateTimeOriginal"] == "2024:05:01 10:11:12"
    assert p.exif["Software"] == "Firmware Version 1.8.1"
    assert p.exif["GPS"] == "present"
    report = _report(p)
    for text in ("Canon EOS R5", "2024:05:01 10:11:12", "Firmware Version 1.8.1", "GPS: present"):
        assert text in report
    assert "52" not in p.exif["GPS"]  # coordinates are not copied
    assert p.summary.startswith("provenance found (EXIF camera Canon Canon EOS R5")
    assert "no AI-generation claim" in p.summary and "authentic" not in p.model_dump_json().lower()


def test_png_xmp_digital_source_type_claims_ai(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", _xmp(IPTC_AI))
    path = tmp_path / "xmp.png"
    _pixels().save(path, pnginfo=info)
    p = read_provenance(path)
    assert p.found and p.claims_ai
    assert p.xmp["Iptc4xmpExt:DigitalSourceType"] == IPTC_AI
    assert p.xmp["xmp:CreatorTool"] == "Test Tool 1.0" and p.xmp["dc:title"] == "A generated cat"
    claim = p.ai_claims[0]
    assert (claim.source, claim.field, claim.kind) == ("xmp", "Iptc4xmpExt:DigitalSourceType", "ai_generated")
    assert p.summary.startswith("metadata claims AI generation (XMP digitalSourceType trainedAlgorithmicMedia")
    assert IPTC_AI in _report(p)


def test_xmp_camera_source_type_is_not_an_ai_claim(tmp_path: Path) -> None:
    path = tmp_path / "capture.jpg"
    _pixels().save(path, xmp=_xmp("http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture").encode())
    p = read_provenance(path)
    assert p.found and not p.claims_ai and p.xmp["Iptc4xmpExt:DigitalSourceType"].endswith("digitalCapture")


def test_png_a1111_parameters_and_comfyui_are_generator_hints(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111)
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1}}}), zip=True)
    path = tmp_path / "sd.png"
    _pixels().save(path, pnginfo=info)
    p = read_provenance(path)
    assert p.claims_ai and {c.field for c in p.ai_claims} == {"parameters", "prompt"}
    assert all(c.source == "png_text" and c.kind == "generator_hint" for c in p.ai_claims)
    assert p.png_text["parameters"] == A1111 and "KSampler" in p.png_text["prompt"]
    assert "Steps: 20, Sampler: Euler a" in _report(p)
    assert "AUTOMATIC1111" in p.summary


def test_generator_name_in_software(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0131] = "Midjourney v6"
    path = tmp_path / "mj.webp"
    _pixels().save(path, exif=exif)
    p = read_provenance(path)
    assert p.claims_ai and p.ai_claims[0].kind == "generator_hint" and "Midjourney" in p.summary


def test_no_metadata_is_not_authentic(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    _pixels().save(path)
    p = read_provenance(path)
    assert not p.found and not p.claims_ai and not p.evidence and not p.errors
    assert p.summary == "no provenance found"
    assert p.c2pa_status == "absent"
    assert "authentic" not in p.model_dump_json().lower()
    assert "authentic" not in _report(p).lower()


def test_corrupt_exif_is_an_error_entry(tmp_path: Path) -> None:
    buf = io.BytesIO()
    _pixels().save(buf, "JPEG")
    data = buf.getvalue()
    garbage = b"Exif\x00\x00" + b"\x00not a tiff header at all" * 4
    app1 = b"\xff\xe1" + (len(garbage) + 2).to_bytes(2, "big") + garbage
    path = tmp_path / "corrupt_exif.jpg"
    path.write_bytes(data[:2] + app1 + data[2:])
    p = read_provenance(path)
    assert [e.source for e in p.errors] == ["exif"] and "EXIF block" in p.errors[0].message
    assert not p.found and p.summary == "no provenance found (1 unreadable metadata block)"


def test_corrupt_xmp_is_an_error_entry(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><broken')
    info.add_text("Software", "GIMP 2.10")
    path = tmp_path / "corrupt_xmp.png"
    _pixels().save(path, pnginfo=info)
    p = read_provenance(path)
    assert [e.source for e in p.errors] == ["xmp"] and "not well-formed" in p.errors[0].message
    assert p.found and p.png_text["Software"] == "GIMP 2.10"  # the rest is still read


def test_xmp_with_entities_is_refused(tmp_path: Path) -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>')
    path = tmp_path / "bomb.jpg"
    _pixels().save(path, xmp=bomb.encode())
    p = read_provenance(path)
    assert p.errors and "DOCTYPE" in p.errors[0].message and not p.xmp


def test_zlib_bomb_text_chunk_is_bounded(tmp_path: Path) -> None:
    import zlib
    body = b"bomb\x00\x00" + zlib.compress(b"a" * (8 * 1024 * 1024), 9)
    buf = io.BytesIO()
    _pixels().save(buf, "PNG")
    data = buf.getvalue()
    chunk = len(body).to_bytes(4, "big") + b"zTXt" + body + zlib.crc32(b"zTXt" + body).to_bytes(4, "big")
    path = tmp_path / "bomb.png"
    path.write_bytes(data[:33] + chunk + data[33:])  # after IHDR
    p = read_provenance(path)
    assert p.errors and "inflates to more than" in p.errors[0].message


def _write_mp4(path: Path, tags: dict[str, str]) -> None:
    import av
    with av.open(str(path), "w", format="mp4", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata.update(tags)
        stream = out.add_stream("mpeg4", rate=5)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_mp4_container_tags(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_mp4(path, {"title": "test clip", "comment": "made with Sora", "com.apple.quicktime.make": "Apple",
                      "com.apple.quicktime.model": "iPhone 15 Pro", "creation_time": "2024-05-01T10:11:12.000000Z"})
    p = read_provenance(path)
    assert p.media_kind == "video" and p.found
    c = p.container
    assert c["title"] == "test clip" and c["com.apple.quicktime.model"] == "iPhone 15 Pro"
    assert c["creation_time"].startswith("2024-05-01T10:11:12") and c["encoder"].startswith("Lavf")
    assert c["stream0.type"] == "video" and c["stream0.codec"] == "mpeg4"
    assert p.claims_ai and p.ai_claims[0].source == "container" and "OpenAI" in p.ai_claims[0].description
    report = _report(p)
    assert "[container] com.apple.quicktime.make: Apple" in report and "[container] title: test clip" in report


# --- C2PA: a manifest signed with a certificate chain made here --------------------------------------------
def _cert_chain():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mffmoe tests")])

    def cert(subject, key, issuer, issuer_key, ca: bool, path_len: int | None = None) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if issuer_key is not key:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                critical=False)
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                              crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        else:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                              crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    root_key, ca_key, ee_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = cert(name("mffmoe test root"), root_key, name("mffmoe test root"), root_key, True)
    inter = cert(name("mffmoe test CA"), ca_key, root.subject, root_key, True, 0)
    ee = cert(name("mffmoe test signer"), ee_key, inter.subject, ca_key, False)
    pem = serialization.Encoding.PEM
    chain = ee.public_bytes(pem) + inter.public_bytes(pem)
    key = ee_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return chain, key, root.public_bytes(pem).decode()


def _sign(src: Path, dst: Path, mime: str, chain: bytes, key: bytes) -> None:
    """Sign `src` with a manifest saying 'created by a trained model' (c2pa-python's Builder)."""
    import c2pa
    manifest = {
        "claim_generator_info": [{"name": "mffmoe-tests", "version": "1.0"}],
        "title": f"generated{src.suffix}",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [
            {"action": "c2pa.created", "digitalSourceType": IPTC_AI, "softwareAgent": {"name": "Test Generator"}}]}}],
    }
    # No thumbnail (faster); no verification after signing (the test root is on no trust list).
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}},
                                      "verify": {"verify_after_sign": False, "remote_manifest_fetch": False}})
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None))
    with c2pa.Builder(manifest, context=context) as builder, open(src, "rb") as s, open(dst, "w+b") as d:
        builder.sign(signer, mime, s, d)


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, bytes, str]:
    pytest.importorskip("c2pa")
    return _cert_chain()


@pytest.fixture(scope="module")
def c2pa_jpeg(tmp_path_factory, chain) -> tuple[Path, str]:
    src = tmp_path_factory.mktemp("c2pa") / "source.jpg"
    _pixels().save(src)
    dst = src.with_name("signed.jpg")
    _sign(src, dst, "image/jpeg", chain[0], chain[1])
    return dst, chain[2]


def test_c2pa_manifest_signed_by_a_test_chain(c2pa_jpeg: tuple[Path, str]) -> None:
    path, _ = c2pa_jpeg
    p = read_provenance(path)
    assert p.c2pa_status == "found" and p.c2pa is not None and p.found and p.claims_ai
    c = p.c2pa
    assert c.claim_generator and "mffmoe-tests" in c.claim_generator
    assert c.title == "generated.jpg" and c.signer == "mffmoe test signer" and c.issuer == "mffmoe tests"
    assert c.digital_source_types == [IPTC_AI]
    assert any(a.action == "c2pa.created" and a.software_agent == "Test Generator" for a in c.actions)
    # Not on any trust list: c2pa says so, and it is reported as it says it.
    assert "signingCredential.untrusted" in c.validation_codes, c.validation_codes
    assert c.validation_state and c.validation_state != "Trusted"
    claim = next(cl for cl in p.ai_claims if cl.source == "c2pa")
    assert claim.kind == "ai_generated" and claim.field == "actions[0].digitalSourceType"
    assert p.summary.startswith("metadata claims AI generation (C2PA digitalSourceType trainedAlgorithmicMedia")
    assert "signed by mffmoe test signer" in p.summary and "signingCredential.untrusted" in p.summary
    report = _report(p)
    for text in ("mffmoe-tests", "generated.jpg", "mffmoe test signer", "c2pa.created", IPTC_AI,
                 f"validation {c.validation_state}"):
        assert text in report


def test_c2pa_trusted_with_the_test_root(c2pa_jpeg: tuple[Path, str]) -> None:
    path, root_pem = c2pa_jpeg
    p = read_provenance(path, c2pa_trust_anchors=root_pem)
    assert p.c2pa is not None and p.c2pa.validation_state == "Trusted", (p.c2pa.validation_state,
                                                                         p.c2pa.validation_codes)
    assert "signingCredential.untrusted" not in p.c2pa.validation_codes


def test_without_c2pa_python_the_rest_is_read(camera_jpeg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "c2pa", None)  # import c2pa -> ImportError
    p = read_provenance(camera_jpeg)
    assert p.c2pa_status == "not_checked" and p.c2pa is None
    assert any("c2pa-python is not installed" in n for n in p.notes)
    assert p.exif["Model"] == "Canon EOS R5"


def test_missing_c2pa_is_visible_in_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "c2pa", None)
    path = tmp_path / "plain.png"
    _pixels().save(path)
    assert read_provenance(path).summary == "no provenance found (C2PA not checked)"


def test_exif_of_an_image_over_pillows_pixel_cap(camera_jpeg: Path, tmp_path: Path) -> None:
    data = bytearray(camera_jpeg.read_bytes())
    sof = data.find(b"\xff\xc0")  # baseline SOF0: length(2) precision(1) height(2) width(2)
    data[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2  # 900 MP: Image.open refuses it
    path = tmp_path / "huge_header.jpg"
    path.write_bytes(bytes(data))
    p = read_provenance(path)
    assert p.exif["Model"] == "Canon EOS R5" and not p.errors


def test_c2pa_tampered_content_reads_invalid(c2pa_jpeg: tuple[Path, str], tmp_path: Path) -> None:
    data = bytearray(c2pa_jpeg[0].read_bytes())
    data[-10] ^= 0xFF  # inside the entropy-coded image data, after the manifest: the hash no longer matches
    path = tmp_path / "tampered.jpg"
    path.write_bytes(bytes(data))
    p = read_provenance(path)
    assert p.c2pa_status == "found" and p.c2pa is not None
    assert p.c2pa.validation_state == "Invalid", (p.c2pa.validation_state, p.c2pa.validation_codes)
    assert any("mismatch" in code for code in p.c2pa.validation_codes), p.c2pa.validation_codes
    assert p.claims_ai and "validation Invalid" in p.summary  # the claim is still reported, with its state


def test_a1111_parameters_in_jpeg_user_comment(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[0x9286] = b"UNICODE\x00" + A1111.encode("utf-16-be")
    path = tmp_path / "a1111.jpg"
    _pixels().save(path, exif=exif)
    p = read_provenance(path)
    assert p.exif["UserComment"] == A1111
    assert any(c.field == "UserComment" and c.kind == "generator_hint" for c in p.ai_claims)


def test_c2pa_manifest_in_an_mp4(tmp_path: Path, chain) -> None:
    src = tmp_path / "clip.mp4"
    _write_mp4(src, {})
    dst = tmp_path / "signed.mp4"
    _sign(src, dst, "video/mp4", chain[0], chain[1])
    p = read_provenance(dst)
    assert p.media_kind == "video" and p.c2pa_status == "found" and p.c2pa is not None
    assert p.c2pa.digital_source_types == [IPTC_AI] and p.c2pa.title == "generated.mp4"
    assert p.claims_ai and p.container["encoder"].startswith("Lavf")


HOSTILE_HEADS = [b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00", b"\xff\xd8\xff\xe1\xff\xff",
                 b"RIFF\x00\x00\x00\x00WEBPVP8X", b"\x00\x00\x00\x18ftypmp42", b"\x1a\x45\xdf\xa3",
                 b"II*\x00\x08\x00\x00\x00\xff\xff"]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's own warning for the TIFF case
@pytest.mark.parametrize("head", HOSTILE_HEADS)
def test_hostile_headers_never_raise(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "hostile.bin"
    path.write_bytes(head + np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    p = read_provenance(path)
    assert not p.claims_ai and "authentic" not in p.summary and p.summary.startswith("no provenance found")


def test_missing_file_raises_the_probes_typed_error(tmp_path: Path) -> None:
    from mffmoe.errors import MediaNotFoundError
    with pytest.raises(MediaNotFoundError):
        read_provenance(tmp_path / "nope.jpg")


def test_the_evidence_report_carries_every_field(tiny_ckpt, camera_jpeg: Path, c2pa_jpeg: tuple[Path, str],
                                                 tmp_path: Path) -> None:
    """`mffmoe report` of the three made files: each provenance field is in the JSON and the HTML report,
    beside (not inside) the score; a file without metadata says "no provenance found", never "authentic"."""
    import json

    from typer.testing import CliRunner

    from mffmoe.cli import app

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", _xmp(IPTC_AI))
    xmp_png = tmp_path / "xmp.png"
    _pixels().save(xmp_png, pnginfo=info)
    plain = tmp_path / "plain.png"
    _pixels().save(plain)
    out = tmp_path / "reports"
    res = CliRunner().invoke(app, ["report", str(camera_jpeg), str(xmp_png), str(c2pa_jpeg[0]), str(plain),
                                   "--out", str(out), "-w", str(tiny_ckpt), "--crop", "frame"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    expected = {"camera": ("Canon EOS R5", "2024:05:01 10:11:12", "Firmware Version 1.8.1"),
                "xmp": (IPTC_AI, "metadata claims AI generation"),
                "signed": ("mffmoe test signer", "c2pa.created", IPTC_AI, "metadata claims AI generation"),
                "plain": ("no provenance found",)}
    for stem, texts in expected.items():
        report = json.loads((out / f"{stem}.report.json").read_text(encoding="utf-8"))
        html = (out / f"{stem}.report.html").read_text(encoding="utf-8")
        as_json = json.dumps(report["provenance"])
        for text in texts:
            assert text in as_json and text in html, (stem, text)
        assert "authentic" not in as_json.lower()
    assert json.loads((out / "xmp.report.json").read_text(encoding="utf-8"))["provenance"]["claims_ai"] is True
