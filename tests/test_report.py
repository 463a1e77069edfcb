"""Reports (issue 16): the JSON form and its determinism, Ed25519 signatures and their check, the
self-contained HTML page in a real headless Chromium (no request leaves the file), the PDF printed from
it (pages turned into pictures by poppler's pdftoppm must not be blank), and the command line end to end.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mffmoe.cli import app
from mffmoe.report.content import VOLATILE, build_report, stable_content
from mffmoe.report.html import NO_PROVENANCE, render_html
from mffmoe.report.sign import canonical, dumps, generate_keypair, sign, verify
from mffmoe.results import WHAT_A_MAP_IS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reports(tiny_detector, media):
    """An image and a video report (the video's frames capped to keep it quick), and the image explained."""
    from mffmoe.explain.base import ExplainOptions
    from mffmoe.explain.explainer import explained

    det = tiny_detector
    image = det.analyze(media["jpg"])
    video = det.analyze(media["mp4"], frames=6)
    shown = explained(det, media["jpg"], image, ExplainOptions(method="occlusion"))
    return {"image": build_report(media["jpg"], image, det), "video": build_report(media["mp4"], video, det),
            "explained": build_report(media["jpg"], shown, det)}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return generate_keypair(d / "mine"), generate_keypair(d / "theirs")


# --- JSON -----------------------------------------------------------------------------------------
def test_json_report_fields(reports, tiny_detector, tiny_ckpt, media):
    r = reports["image"]
    assert r["format"] == "mffmoe-report/1"
    assert r["input"] == {"path": str(media["jpg"]), "name": "photo.jpg", "sha256": sha(media["jpg"]),
                          "size": media["jpg"].stat().st_size, "media_type": "image", "format": "JPEG"}
    assert r["result"]["media_type"] == "image" and 0 <= r["result"]["score"] <= 1
    assert r["result"]["agreement"]["assessment"] in ("likely_real", "uncertain", "likely_fake")
    assert r["provenance"] is None
    m = r["model"]
    assert m["roster"] == list(tiny_detector.info.roster) and m["ema"] is True and m["untrained"] is False
    files = m["weights"]["files"]
    assert set(files) == {"weights", "ema"}
    for f in files.values():
        assert f["sha256"] == sha(Path(f["path"])) and f["bytes"] == Path(f["path"]).stat().st_size
    assert m["weights"]["fingerprint"] == tiny_detector.info.fingerprint()
    assert r["engine"] == tiny_detector.engine.describe()
    s = r["settings"]
    assert s["threshold"] == tiny_detector.threshold and s["crop"] == "frame" and s["frames"] > 0
    assert "images" not in s["engine_options"]  # a job-size hint, not a setting
    assert "roster" not in s  # DetectorConfig.roster describes random weights only
    assert {"python", "mffmoe", "numpy", "pillow"} <= set(r["software"])
    assert dt.datetime.fromisoformat(r["created"].replace("Z", "+00:00")).tzinfo is not None
    assert r["volatile"] == list(VOLATILE)
    v = reports["video"]
    assert v["input"]["media_type"] == "video" and v["result"]["frames_analyzed"] == 6
    json.dumps(r, allow_nan=False)  # plain JSON throughout


def test_provenance_goes_in_as_given(tiny_detector, media):
    result = tiny_detector.analyze(media["png"])
    found = {"standard": "C2PA", "claim_generator": "camera 1.0", "signed": True}
    report = build_report(media["png"], result, tiny_detector, provenance=found)
    assert report["provenance"] == found
    page = render_html(report)
    assert "claim_generator" in page and NO_PROVENANCE not in page


def test_same_analysis_same_content_apart_from_volatile_fields(tiny_detector, media):
    for path, kw in ((media["jpg"], {}), (media["mp4"], {"frames": 5})):
        first = build_report(path, tiny_detector.analyze(path, **kw), tiny_detector,
                             created=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        second = build_report(path, tiny_detector.analyze(path, **kw), tiny_detector)
        assert first["created"] != second["created"]
        assert stable_content(first) == stable_content(second)
        assert canonical(stable_content(first)) == canonical(stable_content(second))
        # exactly the volatile fields may differ: put the first run's back and the reports are equal
        patched = json.loads(json.dumps(second))
        patched["created"] = first["created"]
        patched["result"]["processing_time"] = first["result"]["processing_time"]
        assert patched == first


# --- signatures -----------------------------------------------------------------------------------
def signed_bytes(report, key) -> bytes:
    return dumps(sign(report, key))


def test_signed_report_verifies(reports, keys, media):
    (private, public), _ = keys
    data = signed_bytes(reports["image"], private)
    block = json.loads(data)["signature"]
    assert block["algorithm"] == "Ed25519" and len(base64.b64decode(block["public_key"])) == 32
    assert "except `signature`" in block["signed"] and block["value"]
    ok = verify(data, input_file=media["jpg"], public_key=public)
    assert ok.ok and ok.input_checked and ok.trusted_key and ok.reason is None, ok
    assert "signature valid" in ok.message and "matches" in ok.message
    assert verify(data).ok  # the key in the block suffices to see it is intact
    # re-serialised: not the bytes signed (strict, the default); the content alone still verifies
    reformatted = json.dumps(json.loads(data)).encode()
    bad = verify(reformatted)
    assert not bad.ok and bad.reason == "not_as_written" and "byte for byte" in bad.message
    assert verify(reformatted, strict=False).ok


def test_one_changed_byte_fails(reports, keys):
    (private, _), _ = keys
    data = signed_bytes(reports["image"], private)
    score = json.loads(data)["result"]["score"]
    needle = f'"score": {json.dumps(score)}'.encode()
    at = data.index(needle) + len(needle) - 1
    changed = data[:at] + (b"1" if data[at:at + 1] != b"1" else b"2") + data[at + 1:]
    bad = verify(changed)
    assert not bad.ok and bad.reason == "bad_signature"
    assert "the report was changed after it was signed" in bad.message
    # any byte at all, layout included (a float's 17th digit may parse to the same value: still caught)
    rng = np.random.default_rng(0)
    for i in [*rng.choice(len(data), size=600, replace=False), len(data) - 1]:
        flipped = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        outcome = verify(flipped)
        assert not outcome.ok and outcome.reason in ("bad_signature", "unreadable", "not_as_written"), (i, outcome)


def test_different_input_file_fails(reports, keys, media):
    (private, _), _ = keys
    bad = verify(signed_bytes(reports["image"], private), input_file=media["png"])
    assert not bad.ok and bad.reason == "input_mismatch"
    assert "the file is not the one the report was made from" in bad.message


def test_wrong_key_fails_and_unsigned_says_so(reports, keys):
    (private, _), (_, theirs) = keys
    bad = verify(signed_bytes(reports["image"], private), public_key=theirs)
    assert not bad.ok and bad.reason == "key_mismatch" and "signed by another key" in bad.message
    unsigned = verify(json.dumps(reports["image"]).encode())
    assert not unsigned.ok and unsigned.reason == "unsigned" and "not signed" in unsigned.message
    resigned = sign(json.loads(signed_bytes(reports["image"], private)), keys[1][0])  # replaced, not stacked
    assert verify(dumps(resigned), public_key=theirs).ok


def test_keypair_files(keys):
    (private, public), _ = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text(encoding="utf-8").startswith("-----BEGIN PUBLIC KEY-----")
    from mffmoe.errors import ConfigError

    with pytest.raises(ConfigError, match="--force"):
        generate_keypair(private.parent)


# --- HTML -----------------------------------------------------------------------------------------
def test_html_is_self_contained(reports):
    for report in reports.values():
        page = render_html(report)
        # nothing to fetch: no src/href other than data: URIs and fragments, no scripts, no url() in CSS
        refs = [m for m in __import__("re").findall(r'(?:src|href)="([^"]*)"', page)]
        assert all(r.startswith(("data:image/", "#")) for r in refs), refs
        assert "<script" not in page and "url(" not in page and "@import" not in page


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing; apt-get install -y chromium")
def test_html_opens_in_chromium_without_requests(reports, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")
    pages = {}
    for name, report in reports.items():
        pages[name] = tmp_path / f"{name}.html"
        pages[name].write_text(render_html(report), encoding="utf-8")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1200})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            for name, path in pages.items():
                requests.clear()
                page.goto(path.as_uri())
                page.wait_for_load_state("load")
                foreign = [u for u in requests if not u.startswith(("data:", path.as_uri()))]
                assert foreign == [], foreign
                for section in ("verdict", "input", "provenance", "result", "model", "engine", "settings",
                                "software", "times", "signature"):
                    assert page.is_visible(f"#{section}"), (name, section)
                assert page.text_content("#no-provenance") == NO_PROVENANCE
                verdict = page.text_content("#verdict")
                assert reports[name]["result"]["prediction"] in verdict
                assert page.get_attribute("#assessment", "data-assessment") == \
                    reports[name]["result"]["agreement"]["assessment"]
                body = page.text_content("body")
                assert reports[name]["input"]["sha256"] in body
                for f in reports[name]["model"]["weights"]["files"].values():
                    assert f["sha256"] in body
                if name == "video":
                    assert page.is_visible("svg.chart polyline.frames")
                    assert page.locator("svg.chart circle").count() == 6
                if name == "explained":
                    assert page.text_content("#what-a-map-is") == WHAT_A_MAP_IS
                    img = page.locator("#heatmaps ~ figure img").first
                    assert img.get_attribute("src").startswith("data:image/jpeg;base64,")
                    assert page.evaluate("(i) => i.naturalWidth", img.element_handle()) > 0
                else:
                    assert page.locator("#heatmaps").count() == 0
        finally:
            browser.close()


def test_faces_and_persons_sections(tiny_ckpt, tmp_path):
    from mffmoe.inference.detector import Detector
    from server_helpers import FACE_VIDEO_FRAMES, face_media

    det = Detector.from_dir(tiny_ckpt, device="cpu", batch_size=4, crop="faces")
    try:
        files = face_media(tmp_path / "faces")
        image = build_report(files["faces"], det.analyze(files["faces"]), det)
        video = build_report(files["video"], det.analyze(files["video"], frames=FACE_VIDEO_FRAMES), det)
    finally:
        det.close()
    page = render_html(image)
    assert len(image["result"]["faces"]) == 2 and page.count('<img class="thumb" alt="face') == 2
    page = render_html(video)
    persons = video["result"]["persons"]
    assert persons and page.count('<img class="thumb" alt="person') == len(persons)
    assert page.count('class="person"') == len(persons)  # one chart line per person


def test_out_of_scope_and_untrained_are_flagged(reports):
    report = json.loads(json.dumps(reports["image"]))
    report["result"].update(in_scope=False, scope_reasons=["tiny_input"], untrained=True)
    page = render_html(report)
    assert 'id="scope"' in page and "tiny_input" in page and "UNTRAINED" in page


def test_heatmaps_need_the_analysed_file(reports, media, tmp_path):
    page = render_html(reports["explained"], tmp_path / "gone.jpg")
    assert "The maps could not be drawn" in page and WHAT_A_MAP_IS in page and "data:image/jpeg" not in page
    page = render_html(reports["explained"], media["png"])  # another file: not drawn on the wrong picture
    assert "The maps could not be drawn" in page


# --- PDF ------------------------------------------------------------------------------------------
def not_blank(png: Path) -> bool:
    """Some ink on the page: a last page may hold only a few lines, so the bar is low but above nothing."""
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    return int((pixels < 160).sum()) > 100


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing; apt-get install -y chromium")
@pytest.mark.skipif(shutil.which("pdftoppm") is None,
                    reason="pdftoppm is missing: apt-get install -y poppler-utils (scripts/setup.sh installs it)")
def test_pdf_renders_pages_that_are_not_blank(reports, tmp_path):
    from mffmoe.report.pdf import html_to_pdf

    Image.new("RGB", (331, 468), "white").save(tmp_path / "white.png")
    assert not not_blank(tmp_path / "white.png")  # the check can fail
    for name in ("explained", "video"):
        pdf = html_to_pdf(render_html(reports[name]), tmp_path / f"{name}.pdf")
        assert pdf.read_bytes().startswith(b"%PDF-")
        subprocess.run(["pdftoppm", "-png", "-r", "40", str(pdf), str(tmp_path / name)], check=True, timeout=60)
        pages = sorted(tmp_path.glob(f"{name}-*.png"))
        assert pages, f"no pages in {pdf}"
        assert all(not_blank(p) for p in pages), [p.name for p in pages if not not_blank(p)]


def test_render_as_each_form(reports):
    from mffmoe.errors import ConfigError
    from mffmoe.report import render_as

    assert render_as(reports["image"], "json") == dumps(reports["image"])
    assert render_as(reports["image"], "html").startswith(b"<!DOCTYPE html>")
    with pytest.raises(ConfigError, match="unknown report format"):
        render_as(reports["image"], "docx")


def test_pdf_without_a_browser_is_a_typed_error(monkeypatch, tmp_path):
    from mffmoe.errors import MissingExtraError
    from mffmoe.report.pdf import html_to_pdf

    monkeypatch.setenv("MFFMOE_CHROMIUM", str(tmp_path / "no-such-browser"))
    with pytest.raises(MissingExtraError, match="no such program"):
        html_to_pdf("<html></html>", tmp_path / "x.pdf")


# --- command line ---------------------------------------------------------------------------------
def test_cli_keygen_report_and_verify(tiny_ckpt, media, tmp_path):
    res = run("keygen", "--out", tmp_path / "keys")
    assert res.exit_code == 0, res.stderr
    key, pub = tmp_path / "keys" / "mffmoe-ed25519.key", tmp_path / "keys" / "mffmoe-ed25519.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and pub.is_file() and "key id" in res.stdout
    assert run("keygen", "--out", tmp_path / "keys").exit_code == 2  # never overwrites a key silently
    assert run("keygen", "--out", tmp_path / "other").exit_code == 0

    out = tmp_path / "reports"
    common = ["-w", tiny_ckpt, "--device", "cpu", "--engine", "torch", "--crop", "frame", "--frames", "4"]
    res = run("report", media["jpg"], media["text"], media["mp4"], "--out", out, "--sign", key, *common)
    assert res.exit_code == 1, res.stdout + res.stderr  # the text file failed; the others were written
    assert "notes.txt" in res.stderr and "1 of 3 input(s) failed" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["clip.report.html", "clip.report.json",
                                                     "photo.report.html", "photo.report.json"]
    report = out / "photo.report.json"
    assert json.loads(report.read_text(encoding="utf-8"))["signature"]["algorithm"] == "Ed25519"

    res = run("report", "verify", report, "--input", media["jpg"], "--key", pub)
    assert res.exit_code == 0 and res.stdout.startswith("ok: "), res.stdout + res.stderr
    res = run("report", "verify", report, "--input", media["png"])
    assert res.exit_code == 1 and "not the one the report was made from" in res.stderr
    res = run("report", "verify", report, "--key", tmp_path / "other" / "mffmoe-ed25519.pub")
    assert res.exit_code == 1 and "another key" in res.stderr
    tampered = tmp_path / "tampered.json"
    data = json.loads(report.read_text(encoding="utf-8"))
    data["result"]["prediction"] = "REAL" if data["result"]["prediction"] == "FAKE" else "FAKE"
    tampered.write_bytes(dumps(data))
    res = run("report", "verify", tampered)
    assert res.exit_code == 1 and "changed after it was signed" in res.stderr
    res = run("report", "verify", tmp_path / "missing.json")
    assert res.exit_code == 1
    reindented = tmp_path / "reindented.json"
    reindented.write_text(json.dumps(json.loads(report.read_text(encoding="utf-8")), indent=4), encoding="utf-8")
    res = run("report", "verify", reindented)
    assert res.exit_code == 1 and "byte for byte" in res.stderr
    assert run("report", "verify", reindented, "--content-only").exit_code == 0

    # the same command again: the same content, timestamps and the signature aside
    again = tmp_path / "again"
    res = run("report", "create", media["jpg"], "--out", again, "--sign", key, *common)
    assert res.exit_code == 0, res.stderr
    first, second = (json.loads(p.read_text(encoding="utf-8")) for p in (report, again / "photo.report.json"))
    assert stable_content(first) == stable_content(second)


def test_cli_checks_before_the_model_loads(media, tmp_path):
    missing = tmp_path / "no-weights"  # would fail to load: these errors must come first
    res = run("report", media["jpg"], "--out", tmp_path / "o", "--format", "json,docx", "-w", missing)
    assert res.exit_code == 2 and "--format" in res.stderr
    res = run("report", media["jpg"], "--out", tmp_path / "o", "--format", "html", "--sign", tmp_path / "k",
              "-w", missing)
    assert res.exit_code == 2 and "add json" in res.stderr
    res = run("report", media["jpg"], "--out", tmp_path / "o", "--sign", tmp_path / "nokey", "-w", missing)
    assert res.exit_code == 2 and "signing key" in res.stderr
    (tmp_path / "file").write_text("x")
    res = run("report", media["jpg"], "--out", tmp_path / "file", "-w", missing)
    assert res.exit_code == 2 and "--out" in res.stderr
    res = run("report", "--help")
    assert res.exit_code == 0 and "verify" in res.stdout and "create" in res.stdout


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing; apt-get install -y chromium")
def test_cli_pdf_and_explain(tiny_ckpt, media, tmp_path):
    out = tmp_path / "r"
    res = run("report", media["png"], "--out", out, "--format", "pdf,html", "-w", tiny_ckpt, "--device", "cpu",
              "--engine", "torch", "--crop", "frame", "--explain", "--explain-method", "occlusion")
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["graphic.report.html", "graphic.report.pdf"]
    assert (out / "graphic.report.pdf").read_bytes().startswith(b"%PDF-")
    assert os.path.getsize(out / "graphic.report.pdf") > 1000
    page = (out / "graphic.report.html").read_text(encoding="utf-8")
    assert 'id="heatmaps"' in page and WHAT_A_MAP_IS in page and "data:image/jpeg;base64," in page


def test_a_signature_changed_in_base64s_spare_bits_fails(reports, keys):
    """The last base64 character of a 64-byte signature carries 4 spare bits: changing one decodes to the
    same signature, and must still be caught (the block must be exactly as it was encoded)."""
    import base64

    (private, _), _ = keys
    data = signed_bytes(reports["image"], private)
    value = json.loads(data)["signature"]["value"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    assert value.endswith("==")
    alt = alphabet[alphabet.index(value[-3]) ^ 0b1]
    changed_value = value[:-3] + alt + "=="
    assert base64.b64decode(changed_value) == base64.b64decode(value)  # the same signature bytes
    bad = verify(data.replace(value.encode(), changed_value.encode()))
    assert not bad.ok and bad.reason == "bad_signature"
