"""The web page in a real headless Chromium (Playwright for Python driving Debian's `chromium`).

What a person sees is asserted: the key prompt, the verdict and confidence, the assessment and the
experts' spread, one bar per expert, the video's progress, the per-frame chart with its threshold line,
and the time of a clicked point; in faces
mode (the page's default) the face boxes with their scores over the image and over a video's frame, the
switch to whole-frame results and back, and one chart line per person. The server runs on 127.0.0.1 and
the test fails if the page requests anything from elsewhere (the page shows the chosen file itself
through a blob: URL, which is no request to anywhere).
Set MFFMOE_SCREENSHOT_DIR to keep screenshots of the page.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from mffmoe.server.app import create_app
from mffmoe.server.settings import ServerSettings
from server_helpers import FACE_VIDEO_FRAMES, face_media, live_server, sample_media, tiny_detector

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
KEY = "browser-key"
FRAMES = 20

pytestmark = pytest.mark.browser
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing; install Debian's package: apt-get install -y chromium",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [test] extra")


class SlowProgress:
    """The real detector, with a short pause at each progress report so the page's progress display
    (fed by server-sent events) is on screen long enough to be seen; results are untouched."""

    def __init__(self, inner, pause: float = 0.15) -> None:
        self.inner, self.pause = inner, pause

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def analyze(self, path, progress=None, **kwargs):
        import time

        def slow(done, total):
            time.sleep(self.pause)
            if progress:
                progress(done, total)

        return self.inner.analyze(path, progress=slow, **kwargs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    detector = tiny_detector(root / "weights")
    detector.batch_size = 4  # several progress reports per video
    media = sample_media(root / "media")
    settings = ServerSettings(db_path=root / "jobs.sqlite3", upload_dir=root / "uploads", api_key=KEY)
    return detector, media, settings


def shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    keep = os.environ.get("MFFMOE_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(keep) / f"{name}.png")


def assert_agreement_shown(page, expected) -> None:
    """The assessment and the experts' spread (std, range, votes) under the verdict, as the result has them."""
    a = expected.agreement
    assert page.is_visible("#assessment-line")
    assert page.get_attribute("#assessment", "data-assessment") == a.assessment
    assert page.text_content("#assessment") == {"likely_real": "Likely real", "uncertain": "Uncertain",
                                                 "likely_fake": "Likely fake"}[a.assessment]
    spread = page.text_content("#spread")
    assert f"std {a.std:.3f}" in spread and f"{a.min:.3f}–{a.max:.3f}" in spread, spread
    assert f"{a.fake_votes} of {a.fake_votes + a.real_votes} say fake" in spread, spread


def test_page_analyses_an_image_and_a_video(setup, tmp_path):
    detector, media, settings = setup
    # the page asks for crop=auto: without a face, the whole frame is scored and flagged out of scope
    expected_image = detector.analyze(media["image"], crop="auto")
    expected_video = detector.analyze(media["video"], frames=FRAMES, crop="auto")
    app = create_app(SlowProgress(detector), settings)
    with live_server(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1300})
            foreign: list[str] = []
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else foreign.append(r.url))
            page.set_default_timeout(20_000)
            page.goto(f"{url}/ui")

            # The server has a key: the page asks for it, refuses a wrong one, then unlocks.
            page.wait_for_selector("#key-panel:not([hidden])")
            assert page.is_hidden("#upload-panel")
            page.fill("#api-key", "wrong")
            page.click("#save-key")
            page.wait_for_selector("#key-error:not([hidden])")
            assert "refused" in page.text_content("#key-error")
            page.fill("#api-key", KEY)
            page.click("#save-key")
            page.wait_for_selector("#upload-panel:not([hidden])")
            assert page.is_hidden("#key-panel")
            assert "2 experts" in page.text_content("#model-info")

            # An image: verdict, confidence and one bar per expert; no timeline.
            page.set_input_files("#file", str(media["image"]))
            page.wait_for_selector("#result:not([hidden])")
            assert page.text_content("#verdict") == expected_image.prediction
            assert f"{100 * expected_image.confidence:.1f} %" in page.text_content("#confidence")
            bars = page.query_selector_all("#experts .expert")
            assert len(bars) == len(expected_image.expert_scores) == 2
            for bar, score in zip(bars, expected_image.expert_scores, strict=True):
                assert float(bar.get_attribute("data-score")) == pytest.approx(score, abs=1e-9)
                width = bar.query_selector(".bar").evaluate("e => e.getBoundingClientRect().width")
                track = bar.query_selector(".track").evaluate("e => e.getBoundingClientRect().width")
                assert width / track == pytest.approx(score, abs=0.01)
                assert f"{score:.3f}" in bar.text_content()
            assert page.is_hidden("#timeline")
            assert page.is_visible("#scope") and "no face" in page.text_content("#scope")  # out of scope, said so
            assert page.query_selector_all("#image-overlay .face-box") == []
            assert_agreement_shown(page, expected_image)
            assert page.get_attribute("#scope", "data-reasons").split() == expected_image.scope_reasons
            shot(page, tmp_path, "ui-image")

            # A video: progress while it runs, then the chart with the threshold line.
            page.evaluate("""() => {
                window.__statuses = [];
                const text = document.getElementById('status-text');
                new MutationObserver(() => window.__statuses.push(text.textContent))
                    .observe(text, {childList: true, characterData: true, subtree: true});
            }""")
            page.fill("#frames", str(FRAMES))
            page.set_input_files("#file", str(media["video"]))
            page.wait_for_selector("#timeline:not([hidden])")
            statuses = page.evaluate("window.__statuses")
            assert any(re.fullmatch(rf"Analysing frames: \d+ / {FRAMES}", s) for s in statuses), statuses
            assert page.text_content("#verdict") == expected_video.prediction
            assert f"{FRAMES} frames analysed" in page.text_content("#meta")
            assert_agreement_shown(page, expected_video)
            points = page.query_selector_all("#chart circle.pt")
            assert len(points) == FRAMES
            line = page.query_selector("#threshold-line")
            assert line is not None and "threshold 0.50" in page.text_content("#chart")
            # The threshold line sits at the height of 0.5 between the 0 and 1 grid lines.
            ys = [float(e.get_attribute("y1")) for e in page.query_selector_all("#chart line.grid")]
            assert float(line.get_attribute("y1")) == pytest.approx((min(ys) + max(ys)) / 2)
            # A FAKE point is drawn above the line and a REAL one below (SVG y grows downwards).
            y_line = float(line.get_attribute("y1"))
            for pt, fp in zip(points, expected_video.frame_predictions, strict=True):
                cy = float(pt.get_attribute("cy"))
                assert (cy <= y_line) == (fp.score >= 0.5)

            # Clicking a point shows that frame's time.
            target = expected_video.frame_predictions[7]
            points[7].click()
            info = page.text_content("#frame-info")
            assert f"at {target.timestamp:.2f} s" in info and f"Frame {target.frame_index} " in info, info
            assert "selected" in points[7].get_attribute("class")
            raw = json.loads(page.text_content("#raw"))
            assert raw["data"]["score"] == pytest.approx(expected_video.score, abs=1e-9)
            shot(page, tmp_path, "ui-video")

            # An unreadable file: the server's message, shown to the person.
            bad = tmp_path / "notes.txt"
            bad.write_bytes(b"\x00\x01not media" * 50)
            page.set_input_files("#file", str(bad))
            page.wait_for_selector("#error:not([hidden])")
            assert "not an image or a video" in page.text_content("#error")
            assert page.is_hidden("#result")

            # The API docs page works offline, with the key entered on /ui (same tab session).
            page.goto(f"{url}/docs")
            page.wait_for_selector(".swagger-ui .opblock")
            assert page.locator(".opblock-summary-path", has_text="/analyze").count() >= 1
            assert not foreign, foreign
        finally:
            browser.close()
    assert not list(settings.upload_dir.glob("*"))


def test_a_short_video_shows_moving_progress_and_a_clicked_point_shows_its_frame(setup, tmp_path):
    detector, media, settings = setup
    frames = 8
    old_batch, detector.batch_size = detector.batch_size, 16  # one batch: one progress report, at the end
    try:
        expected = detector.analyze(media["video"], frames=frames, crop="auto")
        app = create_app(SlowProgress(detector, pause=1.5), settings)
        with live_server(app) as url, sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 1300})
                page.set_default_timeout(20_000)
                page.goto(f"{url}/ui")
                page.evaluate(f"() => sessionStorage.setItem('mffmoe.apiKey', {json.dumps(KEY)})")
                page.reload()
                page.wait_for_selector("#upload-panel:not([hidden])")
                page.evaluate("""() => {
                    window.__ticks = [];
                    const el = document.getElementById('status-elapsed');
                    new MutationObserver(() => window.__ticks.push(
                            [document.getElementById('status-text').textContent, el.textContent]))
                        .observe(el, {childList: true, characterData: true, subtree: true});
                }""")
                page.fill("#frames", str(frames))
                page.set_input_files("#file", str(media["video"]))
                page.wait_for_selector("#timeline:not([hidden])")

                # While the only report is pending, the elapsed time still moves on screen.
                ticks = page.evaluate("window.__ticks")
                running = [e for s, e in ticks if s.startswith("Analysing") and e]
                assert len(set(running)) >= 4, ticks
                seconds = [float(e.removesuffix(" s")) for e in running]
                assert seconds == sorted(seconds) and seconds[-1] >= 1.0, seconds
                assert page.text_content("#status-elapsed") == ""  # stopped with the result

                # The threshold's label sits outside the plot: it covers no point.
                overlaps = page.evaluate("""() => {
                    const box = (e) => e.getBoundingClientRect();
                    const label = box(document.querySelector('#chart .threshold-label'));
                    return [...document.querySelectorAll('#chart circle.pt')].filter((pt) => {
                        const b = box(pt);
                        return !(b.right < label.left || b.left > label.right ||
                                 b.bottom < label.top || b.top > label.bottom);
                    }).length;
                }""")
                assert overlaps == 0
                assert "threshold 0.50" in page.text_content("#chart .threshold-label")

                # Clicking a point shows that frame's picture, as kept with the job.
                points = page.query_selector_all("#chart circle.pt")
                assert len(points) == frames
                seen = []
                for i in (1, 6):
                    points[i].click()
                    target = expected.frame_predictions[i]
                    page.wait_for_selector(f"#frame-image[data-frame='{target.frame_index}']:not([hidden])")
                    assert f"Frame {target.frame_index} " in page.text_content("#frame-info")
                    seen.append(page.evaluate("""() => {
                        const img = document.getElementById('frame-image');
                        const c = document.createElement('canvas');
                        c.width = img.naturalWidth; c.height = img.naturalHeight;
                        const ctx = c.getContext('2d');
                        ctx.drawImage(img, 0, 0);
                        const px = ctx.getImageData(0, 0, c.width, c.height).data;
                        let sum = 0;
                        for (let k = 0; k < px.length; k += 4) sum += px[k] + px[k + 1] + px[k + 2];
                        return [img.naturalWidth, img.naturalHeight, sum];
                    }"""))
                assert [s[:2] for s in seen] == [[96, 64], [96, 64]]  # small frames are kept as they are
                assert seen[0][2] != seen[1][2]  # two different frames
                shot(page, tmp_path, "ui-short-video")
                keep = Path("/tmp/mffmoe-ui-short-video.png")
                page.screenshot(path=str(keep), full_page=True)
            finally:
                browser.close()
    finally:
        detector.batch_size = old_batch


def _boxes(page, overlay: str) -> list[dict]:
    """Each face box drawn in `overlay`: its score, label and place relative to the picture under it."""
    return page.evaluate("""(sel) => {
        const overlay = document.querySelector(sel);
        const pic = overlay.parentElement.querySelector('img').getBoundingClientRect();
        return [...overlay.querySelectorAll('.face-box')].map((b) => {
            const r = b.getBoundingClientRect();
            return {score: parseFloat(b.dataset.score), label: b.textContent, cls: b.className,
                    left: r.left - pic.left, top: r.top - pic.top, right: r.right - pic.left,
                    bottom: r.bottom - pic.top, width: pic.width, height: pic.height};
        });
    }""", overlay)


def _assert_boxes_match(boxes: list[dict], faces, dims: dict) -> None:
    assert len(boxes) == len(faces) >= 1
    for b, f in zip(boxes, faces, strict=True):
        assert b["score"] == pytest.approx(f.score, abs=1e-9) and f"{f.score:.3f}" in b["label"]
        assert ("fake" if f.prediction == "FAKE" else "real") in b["cls"].split()
        sx, sy = b["width"] / dims["width"], b["height"] / dims["height"]  # the picture as displayed
        x0, y0, x1, y1 = f.box
        expected = [max(0, x0) * sx, max(0, y0) * sy, min(dims["width"], x1) * sx, min(dims["height"], y1) * sy]
        got = [b["left"], b["top"], b["right"], b["bottom"]]
        assert got == pytest.approx(expected, abs=1.5), (got, expected)


def test_faces_boxes_the_switch_and_persons(setup, tmp_path):
    detector, _, settings = setup
    faces = face_media(tmp_path / "faces")
    with_faces = detector.analyze(faces["faces"], crop="auto")
    whole = detector.analyze(faces["faces"], crop="frame")
    video = detector.analyze(faces["video"], frames=FACE_VIDEO_FRAMES, crop="auto")
    assert with_faces.crop == "faces" and len(with_faces.faces) == 2 and video.persons
    with live_server(create_app(detector, settings)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1300})
            foreign: list[str] = []
            posts: list[str] = []
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else foreign.append(r.url))
            page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
            page.set_default_timeout(20_000)
            page.goto(f"{url}/ui")
            page.evaluate(f"() => sessionStorage.setItem('mffmoe.apiKey', {json.dumps(KEY)})")
            page.reload()
            page.wait_for_selector("#upload-panel:not([hidden])")
            assert page.get_attribute("#crop-faces", "aria-pressed") == "true"  # faces (auto) by default

            # An image with two faces: a box over each, coloured by its verdict, labelled with its score.
            page.set_input_files("#file", str(faces["faces"]))
            page.wait_for_selector("#result[data-crop='faces']:not([hidden])")
            page.wait_for_selector("#image-view:not([hidden]) #image-overlay .face-box")
            assert page.text_content("#verdict") == with_faces.prediction
            assert f"P(fake) {with_faces.score:.3f}" in page.text_content("#score-line")
            _assert_boxes_match(_boxes(page, "#image-overlay"), with_faces.faces, with_faces.dimensions)
            items = page.query_selector_all("#face-list li")
            assert [float(i.get_attribute("data-score")) for i in items] == \
                pytest.approx([f.score for f in with_faces.faces], abs=1e-9)
            assert page.text_content("#faces-title") == "Faces (2)" and page.is_hidden("#scope")
            shot(page, tmp_path, "ui-faces")

            # The switch: whole-frame results for the same file (analysed again), then faces again (kept).
            page.click("#crop-frame")
            page.wait_for_selector("#result[data-crop='frame']:not([hidden])")
            assert page.get_attribute("#crop-frame", "aria-pressed") == "true"
            assert f"P(fake) {whole.score:.3f}" in page.text_content("#score-line")
            assert page.text_content("#verdict") == whole.prediction
            assert page.query_selector_all("#image-overlay .face-box") == [] and page.is_hidden("#faces-panel")
            assert page.is_visible("#image-view") and "scored: whole frame" in page.text_content("#meta")
            assert len([u for u in posts if u.endswith("/jobs")]) == 2
            page.click("#crop-faces")
            page.wait_for_selector("#result[data-crop='faces']:not([hidden])")
            page.wait_for_selector("#image-overlay .face-box")
            assert f"P(fake) {with_faces.score:.3f}" in page.text_content("#score-line")
            assert len(_boxes(page, "#image-overlay")) == 2
            assert len([u for u in posts if u.endswith("/jobs")]) == 2  # shown from the page's copy

            # A video with two people: a line per person, a legend with their faces and scores, and the
            # boxes of the clicked frame's faces over it.
            page.fill("#frames", str(FACE_VIDEO_FRAMES))
            page.set_input_files("#file", str(faces["video"]))
            page.wait_for_selector("#timeline:not([hidden])")
            page.wait_for_selector("#result[data-crop='faces']:not([hidden])")
            assert page.is_hidden("#image-view")
            lines = page.query_selector_all("#chart path.person-line")
            assert [int(e.get_attribute("data-person")) for e in lines] == [q.person for q in video.persons]
            for line, person in zip(lines, video.persons, strict=True):
                assert line.get_attribute("d").count("L") == len(person.timeline) - 1  # a point per sighting
                dots = page.query_selector_all(f"#chart circle.person-pt[data-person='{person.person}']")
                assert len(dots) == len(person.timeline)
            assert len({e.get_attribute("stroke") for e in lines}) == len(lines)  # a colour each
            legend = page.query_selector_all("#chart-legend li.person")
            assert len(legend) == len(video.persons)
            for li, person in zip(legend, video.persons, strict=True):
                assert f"{person.score:.3f}" in li.text_content()
                assert li.query_selector("img").get_attribute("src") == person.thumbnail
            assert page.text_content("#faces-title") == f"Persons ({len(video.persons)})"
            assert len(page.query_selector_all("#chart circle.pt")) == FACE_VIDEO_FRAMES  # the frame line stays
            target = video.frame_predictions[1]  # before the two cross
            # A person's point selects its frame (they lie over the frame line's: a frame's score is its
            # highest face's); the last person's is drawn on top.
            top = [q for q in video.persons if any(t.index == target.index for t in q.timeline)][-1]
            page.click(f"#chart circle.person-pt[data-index='{target.index}'][data-person='{top.person}']")
            page.wait_for_selector(f"#frame-image[data-frame='{target.frame_index}']:not([hidden])")
            page.wait_for_function("document.querySelectorAll('#frame-overlay .face-box').length > 0")
            _assert_boxes_match(_boxes(page, "#frame-overlay"), target.faces, video.dimensions)
            assert all(f"P{f.person} {f.score:.3f}" in page.text_content("#frame-info") for f in target.faces)
            shot(page, tmp_path, "ui-persons")

            # In whole-frame mode the same video has the frame line only.
            page.click("#crop-frame")
            page.wait_for_selector("#result[data-crop='frame']:not([hidden])")
            assert page.query_selector_all("#chart path.person-line") == [] and page.is_hidden("#chart-legend")
            assert len(page.query_selector_all("#chart circle.pt")) == FACE_VIDEO_FRAMES
            assert not foreign, foreign
        finally:
            browser.close()
    assert not list(settings.upload_dir.glob("*"))


def test_docs_page_asks_for_the_key_instead_of_failing(setup, tmp_path):
    detector, _, settings = setup
    with live_server(create_app(detector, settings)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(f"{url}/docs")
            page.wait_for_selector("#key-prompt:not([hidden])")
            assert "needs an API key" in page.text_content("#key-prompt")
            page.wait_for_timeout(300)
            assert "Failed to load API definition" not in page.text_content("body")
            assert page.locator(".swagger-ui .opblock").count() == 0
            page.fill("#docs-key", "wrong")
            page.click("#key-bar button")
            page.wait_for_function("document.getElementById('key-prompt').textContent.includes('refused')")
            page.fill("#docs-key", KEY)
            page.click("#key-bar button")
            page.wait_for_selector(".swagger-ui .opblock")
            assert page.is_hidden("#key-prompt")
            assert page.locator(".opblock-summary-path", has_text="/jobs/{job_id}/frames/{frame_index}").count() == 1
            assert "Failed to load API definition" not in page.text_content("body")
            shot(page, tmp_path, "docs")
        finally:
            browser.close()


def test_explanations_overlay_with_opacity_faces_and_frames(setup, tmp_path):
    """With "Show where the experts look": the map over the image on a canvas, the slider sets its
    opacity, the sentence saying what a map is; a faces image offers each face; a video shows its most
    suspicious frame's map at once, marks the explained points, and a click on one shows its map."""
    from mffmoe.results import WHAT_A_MAP_IS

    detector, media, settings = setup
    faces = face_media(tmp_path / "faces")
    with live_server(create_app(detector, settings)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1300})
            foreign: list[str] = []
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else foreign.append(r.url))
            page.set_default_timeout(30_000)
            page.goto(f"{url}/ui")
            page.evaluate(f"() => sessionStorage.setItem('mffmoe.apiKey', {json.dumps(KEY)})")
            page.reload()
            page.wait_for_selector("#upload-panel:not([hidden])")
            assert page.is_hidden("#explain-panel") and not page.is_checked("#explain")
            page.check("#explain")

            # An image (no face: the whole picture): one map over the whole picture.
            page.set_input_files("#file", str(media["image"]))
            page.wait_for_selector("#image-heat:not([hidden])")
            assert page.text_content("#explain-what").strip() == WHAT_A_MAP_IS
            assert page.is_visible("#explain-what")
            assert page.get_attribute("#explain-info", "data-method") in ("gradcam", "occlusion")
            heat = page.evaluate("""() => {
                const c = document.getElementById('image-heat'), img = document.getElementById('media-image');
                const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let painted = 0;
                for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
                const a = c.getBoundingClientRect(), b = img.getBoundingClientRect();
                return {painted, pixels: c.width * c.height, same: [a.left - b.left, a.top - b.top,
                        a.width - b.width, a.height - b.height].every((d) => Math.abs(d) < 1.5)};
            }""")
            assert heat["same"] and heat["painted"] == heat["pixels"] > 0, heat  # the box is the whole picture
            assert page.locator("#explain-item option").count() == 1
            raw = json.loads(page.text_content("#raw"))
            (item,) = raw["data"]["explanation"]["items"]
            assert page.locator("#image-overlay .peak").count() == (1 if item["peak"] else 0)
            opacity = lambda: float(page.evaluate(  # noqa: E731
                "getComputedStyle(document.getElementById('image-heat')).opacity"))
            assert opacity() == pytest.approx(0.6)
            page.fill("#heat-opacity", "20")
            assert opacity() == pytest.approx(0.2) and page.text_content("#heat-opacity-value") == "20 %"
            page.fill("#heat-opacity", "90")
            assert opacity() == pytest.approx(0.9)
            shot(page, tmp_path, "ui-explain-image")

            # Two faces: one map per face crop, all at once or each alone.
            page.set_input_files("#file", str(faces["faces"]))
            page.wait_for_function("document.querySelectorAll('#explain-item option').length === 3")
            assert page.text_content("#explain-item option:first-child").startswith("All faces (2)")
            page.wait_for_selector("#image-heat[data-items='2']")
            page.select_option("#explain-item", "1")
            page.wait_for_selector("#image-heat[data-items='1']")
            assert opacity() == pytest.approx(0.9)  # the slider holds for the next picture
            shot(page, tmp_path, "ui-explain-faces")

            # A video in whole-frame mode: the most suspicious frame's map on its thumbnail at once.
            page.click("#crop-frame")
            page.fill("#frames", "8")
            page.set_input_files("#file", str(media["video"]))
            page.wait_for_selector("#timeline:not([hidden])")
            page.wait_for_selector("#frame-heat:not([hidden])")
            raw = json.loads(page.text_content("#raw"))
            explained = [it["frame_index"] for it in raw["data"]["explanation"]["items"]]
            assert len(explained) == 3 and page.locator("#chart circle.pt.explained").count() == 3
            scores = {f["frame_index"]: f["score"] for f in raw["data"]["frame_predictions"]}
            ranked = sorted(explained, key=lambda i: (-scores[i], i))  # the most suspicious first
            assert page.get_attribute("#frame-image", "data-frame") == str(ranked[0])
            assert page.locator("#explain-item option").count() == 3
            others = [f for f in raw["data"]["frame_predictions"] if f["frame_index"] not in explained]
            page.click(f"#chart circle.pt[data-index='{others[0]['index']}']")
            page.wait_for_function("(f) => document.getElementById('frame-image').dataset.frame === f",
                                   arg=str(others[0]["frame_index"]))
            assert page.is_hidden("#frame-heat") and "no map" in page.text_content("#explain-info")
            last = next(f for f in raw["data"]["frame_predictions"] if f["frame_index"] == ranked[-1])
            page.click(f"#chart circle.pt[data-index='{last['index']}']")
            page.wait_for_selector("#frame-heat:not([hidden])")
            assert page.get_attribute("#frame-image", "data-frame") == str(ranked[-1])
            assert page.eval_on_selector("#explain-item", "s => s.selectedIndex") == 2
            assert page.is_visible("#explain-what")
            shot(page, tmp_path, "ui-explain-video")

            # A video in faces mode: the explained frame's faces, each by its crop square, on its thumbnail.
            page.click("#crop-faces")
            page.fill("#frames", str(FACE_VIDEO_FRAMES))
            page.set_input_files("#file", str(faces["video"]))
            page.wait_for_selector("#chart.with-persons")
            page.wait_for_selector("#frame-heat:not([hidden])")
            raw = json.loads(page.text_content("#raw"))
            items = raw["data"]["explanation"]["items"]
            first = page.get_attribute("#frame-image", "data-frame")
            shown = [it for it in items if str(it["frame_index"]) == first]
            assert shown and all(it["kind"] == "face" for it in shown)
            assert page.get_attribute("#frame-heat", "data-items") == str(len(shown))
            assert page.locator("#frame-overlay .face-box").count() == len(shown)
            shot(page, tmp_path, "ui-explain-video-faces")
            assert foreign == []
        finally:
            browser.close()


def test_the_page_shows_provenance_and_downloads_the_jobs_report(setup, tmp_path):
    """Beside the verdict, what the file says about itself; "Download report" saves the finished job's
    HTML and PDF report (fetched with the API key)."""
    detector, media, settings = setup
    app = create_app(detector, settings)
    with live_server(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.set_default_timeout(30_000)
            page.goto(f"{url}/ui")
            page.wait_for_selector("#key-panel:not([hidden])")
            page.fill("#api-key", KEY)
            page.click("#save-key")
            page.wait_for_selector("#upload-panel:not([hidden])")
            page.set_input_files("#file", str(media["image"]))
            page.wait_for_selector("#result:not([hidden])")
            assert page.text_content("#provenance-text") == "no provenance found"
            page.wait_for_selector("#report-links:not([hidden])")
            for fmt, magic in (("html", b"<!DOCTYPE html>"), ("pdf", b"%PDF")):
                with page.expect_download() as download:
                    page.click(f"#report-{fmt}")
                saved = tmp_path / f"report.{fmt}"
                download.value.save_as(saved)
                assert saved.read_bytes().startswith(magic) and download.value.suggested_filename.endswith(fmt)
        finally:
            browser.close()
