"""`mffmoe scan` on one machine: sources, rows equal to `analyze`, dedup, bad files, resume, crashes."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mffmoe.cli import app
from mffmoe.errors import MFFMoEError, ResultsLockedError, ResultsMismatchError, ScanError, ScanSourceError
from mffmoe.inference.detector import Detector
from mffmoe.scan import ScanOptions, read_results, run_scan
from mffmoe.scan.decode import DecodeConfig
from mffmoe.scan.job import resolve_crop
from mffmoe.scan.local_runner import LocalRunner
from mffmoe.scan.sources import list_inputs
from mffmoe.scan.store import ParquetStore, open_store
from scan_helpers import assert_same_result, assert_same_rows, crashing_decode, make_collection, make_face_collection

FRAMES = 4
TESTS_DIR = Path(__file__).parent


@pytest.fixture(scope="module")
def weights(tiny_ckpt) -> Path:
    return tiny_ckpt  # conftest: tiny roster, input size 64, official layout


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("scan-collection") / "media"
    return root, make_collection(root)


@pytest.fixture(scope="module")
def detector(weights) -> Detector:
    return Detector.from_dir(weights, frames=FRAMES, batch_size=4)


def options(source, out, weights, **kw) -> ScanOptions:
    return ScanOptions(source=Path(source), out=Path(out), weights=Path(weights), frames=FRAMES, batch_size=4,
                       workers=2, **kw)


@pytest.fixture(scope="module")
def local_scan(collection, weights, tmp_path_factory):
    root, _ = collection
    out = tmp_path_factory.mktemp("scan-out") / "results.parquet"
    summary = run_scan(options(root, out, weights), progress=False)
    return summary, read_results(out).to_pylist(), out


# -- sources --------------------------------------------------------------------------------------
def test_sources_directory_list_and_csv(collection, tmp_path):
    root, made = collection
    listed = list_inputs(root)
    assert str(made["hidden"][0]) not in listed  # hidden folders are skipped, as `analyze` does
    assert listed == sorted(listed, key=lambda p: Path(p).parts)
    assert len(listed) == len(made["images"]) + len(made["videos"]) + len(made["duplicates"]) + len(made["broken"])

    # A text list: relative paths resolve against the list's folder; comments, blanks and repeats are dropped.
    lst = root.parent / "list.txt"
    rel = os.path.relpath(made["images"][0], lst.parent)
    lst.write_text(f"# inputs\n{rel}\n\n{made['videos'][0]}\n{rel}\n")
    assert list_inputs(lst) == [str(made["images"][0]), str(made["videos"][0])]

    csv_file = tmp_path / "inputs.csv"
    csv_file.write_text(f"id,Path,label\n1,{made['images'][1]},x\n2,{made['broken'][0]},y\n")
    assert list_inputs(csv_file) == [str(made["images"][1]), str(made["broken"][0])]

    bad_csv = tmp_path / "nopath.csv"
    bad_csv.write_text("file,label\na.jpg,1\n")
    with pytest.raises(ScanSourceError, match="path"):
        list_inputs(bad_csv)
    with pytest.raises(ScanSourceError):
        list_inputs(made["images"][0])  # a JPEG is not a list of paths
    with pytest.raises(ScanSourceError):
        list_inputs(tmp_path / "missing")


# -- one local scan, checked many ways --------------------------------------------------------------
def test_rows_equal_analyze(local_scan, detector):
    _, rows, _ = local_scan
    for row in rows:
        try:
            expected = detector.analyze(row["path"])
        except MFFMoEError as e:
            assert row["error_type"] == type(e).__name__ and row["error_kind"] == e.kind, row
            assert row["error_message"] == str(e)
            assert row["prediction"] is None and row["score"] is None  # never a made-up score
            continue
        assert row["error_type"] is None, row
        assert row["media_type"] == expected.media_type
        assert row["prediction"] == expected.prediction
        assert row["score"] == pytest.approx(expected.score, abs=1e-6)
        assert row["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
        assert row["expert_scores"] == pytest.approx(expected.expert_scores, abs=1e-6)
        assert (row["width"], row["height"]) == (expected.dimensions["width"], expected.dimensions["height"])
        assert (row["crop"], row["in_scope"], row["note"]) == (expected.crop, expected.in_scope, expected.note)
        if expected.media_type == "video":
            assert row["frames_analyzed"] == expected.frames_analyzed
            assert row["frames_failed"] == expected.frames_failed
            assert row["frame_count"] == expected.frame_count
        assert row["model"] == "MFF-MOE-V1" and row["processing_time"] >= 0


def test_one_row_per_input_with_identity(local_scan, collection):
    summary, rows, out = local_scan
    root, made = collection
    paths = [r["path"] for r in rows]
    assert paths == sorted(list_inputs(root)) and len(set(paths)) == summary.inputs
    for row in rows:
        assert row["content_hash"] == hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest()
        assert row["size"] == Path(row["path"]).stat().st_size
        assert row["weights_hash"] and row["frames_requested"] == FRAMES and row["pooling"] == "mean"
        assert row["crop_requested"] == "auto" and row["face_settings"]  # the weights' own mode (no manifest crop)
    assert not Path(str(out) + ".parts").exists()  # parts folded into the single file at the end
    assert pq.read_table(out).num_rows == len(rows)


def test_duplicates_are_analyzed_once(local_scan, collection):
    summary, rows, _ = local_scan
    _, made = collection
    by_path = {r["path"]: r for r in rows}
    assert summary.duplicates == len(made["duplicates"])
    assert summary.analyzed == summary.inputs - summary.duplicates
    for dup, original in zip(made["duplicates"], (made["images"][0], made["videos"][0]), strict=True):
        pair = [by_path[str(dup)], by_path[str(original)]]
        copy = next(r for r in pair if r["duplicate_of"])
        leader = next(r for r in pair if not r["duplicate_of"])
        assert copy["duplicate_of"] == leader["path"] and copy["processing_time"] == 0.0
        assert copy["score"] == leader["score"] and copy["content_hash"] == leader["content_hash"]


def test_bad_files_are_error_rows(local_scan, collection):
    summary, rows, _ = local_scan
    _, made = collection
    by_path = {r["path"]: r for r in rows}
    kinds = {p.name: by_path[str(p)]["error_type"] for p in made["broken"]}
    assert kinds == {"cut.mp4": "CorruptMediaError", "empty.jpg": "EmptyMediaError",
                     "notes.txt": "UnsupportedMediaError", "truncated.png": "CorruptMediaError"}
    assert summary.verdicts["ERROR"] == len(made["broken"])
    assert sum(summary.failures.values()) == len(made["broken"])
    assert summary.verdicts["REAL"] + summary.verdicts["FAKE"] == summary.inputs - len(made["broken"])


# -- faces mode -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_collection(tmp_path_factory) -> dict[str, Path]:
    return make_face_collection(tmp_path_factory.mktemp("scan-faces") / "media")


@pytest.fixture(scope="module")
def face_scans(face_collection, weights, tmp_path_factory) -> dict[str, list[dict]]:
    """The face collection scanned in each crop mode."""
    root = face_collection["scene"].parent
    out = tmp_path_factory.mktemp("scan-faces-out")
    scans = {}
    for crop in ("auto", "faces", "frame"):
        summary = run_scan(options(root, out / f"{crop}.parquet", weights, crop=crop), progress=False)
        assert summary.out_of_scope == (0 if crop == "frame" else 1)  # the face-free image
        scans[crop] = read_results(out / f"{crop}.parquet").to_pylist()
    return scans


@pytest.mark.parametrize("crop", ["auto", "faces"])
def test_faces_mode_rows_equal_analyze(face_scans, face_collection, detector, crop):
    rows = {Path(r["path"]).name: r for r in face_scans[crop]}
    assert set(rows) == {p.name for p in face_collection.values()}
    for row in rows.values():
        expected = detector.analyze(row["path"], crop=crop)
        assert row["error_type"] is None, row
        assert row["crop_requested"] == crop and row["face_settings"] is not None
        assert (row["media_type"], row["prediction"], row["crop"], row["in_scope"], row["note"]) == (
            expected.media_type, expected.prediction, expected.crop, expected.in_scope, expected.note)
        assert row["score"] == pytest.approx(expected.score, abs=1e-6)
        assert row["expert_scores"] == pytest.approx(expected.expert_scores, abs=1e-6)
        if expected.media_type == "video":
            faces = [f.score for p in expected.frame_predictions for f in p.faces or []]
            assert row["persons"] == len(expected.persons or [])
            assert row["frames_analyzed"] == expected.frames_analyzed
        else:
            faces = [f.score for f in expected.faces or []]
            assert row["persons"] is None
        assert row["face_count"] == len(faces)
        assert row["max_face_score"] == (pytest.approx(max(faces), abs=1e-6) if faces else None)
    scene, free, video = rows["scene.png"], rows["free.png"], rows["two.mp4"]
    assert (scene["crop"], scene["in_scope"], scene["face_count"]) == ("faces", True, 2)
    assert scene["score"] == pytest.approx(scene["max_face_score"], abs=1e-9)  # face pooling: max
    assert (free["crop"], free["in_scope"], free["face_count"], free["max_face_score"]) == ("frame", False, 0, None)
    assert "no face found" in free["note"]
    assert (video["crop"], video["in_scope"]) == ("faces", True) and video["persons"] >= 2


def test_frame_mode_rows_are_unchanged(face_scans, detector):
    for row in face_scans["frame"]:
        expected = detector.analyze(row["path"], crop="frame")
        assert row["score"] == pytest.approx(expected.score, abs=1e-6)
        assert (row["crop_requested"], row["crop"], row["in_scope"], row["face_settings"]) == ("frame", "frame",
                                                                                            None, None)
        assert row["face_count"] is None and row["max_face_score"] is None and row["persons"] is None
        assert row["note"] == expected.note


def test_faces_mode_results_equal_analyze_in_full(face_collection, weights, detector):
    """Straight from the runner, before rows: the whole result (faces, persons, timelines, thumbnails)."""
    from mffmoe.config import DetectorConfig

    config = DetectorConfig(weights=weights, frames=FRAMES, batch_size=4, crop="faces")
    cfg = DecodeConfig.of(resolve_crop(config, detector.info), detector.input_size)
    runner = LocalRunner(detector, cfg, workers=1)
    paths = [str(p) for p in face_collection.values()]
    done = {f.path: f.outcome for f in runner.run(paths)}
    for path in paths:
        assert_same_result(done[path].model_dump(), detector.analyze(path, crop="faces").model_dump(), where=path)
    persons = done[str(face_collection["video"])].persons
    assert len([p for p in persons if p.counted]) == 2
    assert all(p.thumbnail.startswith("data:image/jpeg") for p in persons)


def test_cli_scan_takes_the_face_options(tmp_path, monkeypatch):
    import mffmoe.scan.job as job
    from mffmoe.scan.progress import ScanSummary

    seen = []
    monkeypatch.setattr(job, "run_scan", lambda o, **k: seen.append(o.detector) or ScanSummary())
    base = ["scan", str(tmp_path), "--out", str(tmp_path / "r.jsonl"), "--untrained"]
    assert CliRunner().invoke(app, base).exit_code == 0
    extra = ["--crop", "faces", "--face-margin", "1.5", "--align", "--face-pooling", "mean", "--min-face", "40"]
    assert CliRunner().invoke(app, base + extra).exit_code == 0
    assert seen[0].crop is None  # the weights' own mode
    assert (seen[1].crop, seen[1].face_margin, seen[1].align, seen[1].face_pooling, seen[1].min_face) == (
        "faces", 1.5, True, "mean", 40)
    assert CliRunner().invoke(app, base + ["--crop", "face"]).exit_code == 2


def test_resume_in_another_crop_mode_reuses_no_row(face_collection, weights, tmp_path):
    root = face_collection["scene"].parent
    out = tmp_path / "r.jsonl"
    first = run_scan(options(root, out, weights, crop="frame"), progress=False)
    with pytest.raises(ResultsMismatchError, match="crop_requested"):
        run_scan(options(root, out, weights, crop="auto"), progress=False)
    faces_out = tmp_path / "faces.jsonl"
    run_scan(options(root, faces_out, weights, crop="faces"), progress=False)
    with pytest.raises(ResultsMismatchError, match="face_settings"):  # the same mode, other face settings
        run_scan(options(root, faces_out, weights, crop="faces", face_margin=1.5), progress=False)
    # Results of scans from before crop modes (no crop columns) were whole frames: they resume in frame mode.
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    out.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("crop_requested", "crop")}) + "\n"
                           for r in rows))
    again = run_scan(options(root, out, weights, crop="frame"), progress=False)
    assert (again.skipped, again.analyzed) == (first.inputs, 0)
    with pytest.raises(ResultsMismatchError, match="crop_requested"):
        run_scan(options(root, out, weights, crop="faces"), progress=False)


# -- resume -----------------------------------------------------------------------------------------
def test_resume_skips_done_and_redoes_only_changes(collection, weights, tmp_path):
    root = tmp_path / "media"
    shutil.copytree(collection[0], root)
    out = tmp_path / "results.jsonl"
    first = run_scan(options(root, out, weights), progress=False)
    before = out.read_bytes()

    again = run_scan(options(root, out, weights), progress=False)
    assert (again.skipped, again.analyzed, again.written) == (first.inputs, 0, 0)
    assert out.read_bytes() == before  # idempotent: nothing rewritten

    changed = root / "a" / "img001.png"
    shutil.copyfile(root / "b" / "c" / "img004.png", changed)            # new bytes, same content as another file
    (root / "new").mkdir()
    from mffmoe.testing.media import make_image
    make_image(root / "new" / "fresh.jpg", 80, 60, seed=42)            # a new input
    third = run_scan(options(root, out, weights), progress=False)
    assert third.inputs == first.inputs + 1
    assert (third.skipped, third.analyzed, third.copied) == (first.inputs - 1, 1, 1)
    rows = read_results(out).to_pylist()
    assert len(rows) == third.inputs and len({r["path"] for r in rows}) == len(rows)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == len(rows)  # superseded rows compacted away
    by_path = {r["path"]: r for r in rows}
    assert by_path[str(changed)]["duplicate_of"] == str(root / "b" / "c" / "img004.png")
    assert by_path[str(changed)]["score"] == by_path[str(root / "b" / "c" / "img004.png")]["score"]

    with pytest.raises(ResultsMismatchError, match="frames_requested"):
        run_scan(ScanOptions(source=root, out=out, weights=weights, frames=FRAMES + 1, workers=1), progress=False)


def test_retry_errors(collection, weights, tmp_path):
    root, made = collection
    lst = tmp_path / "list.txt"
    lst.write_text(f"{made['broken'][0]}\n{made['images'][2]}\n")
    out = tmp_path / "r.jsonl"
    run_scan(options(lst, out, weights), progress=False)
    assert run_scan(options(lst, out, weights), progress=False).analyzed == 0
    retried = run_scan(options(lst, out, weights, retry_errors=True), progress=False)
    assert (retried.analyzed, retried.skipped) == (1, 1)


_KILLED_SCAN = textwrap.dedent(f"""
    import os, signal, sys
    from pathlib import Path
    from mffmoe.scan import ScanOptions, run_scan
    from mffmoe.scan.store import ParquetStore

    def main():
        source, out, weights, after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        append, count = ParquetStore.append, [0]

        def dying_append(self, row):
            append(self, row)
            count[0] += 1
            if count[0] == after:  # the power goes out right after this row was acknowledged
                os.kill(os.getpid(), signal.SIGKILL)

        ParquetStore.append = dying_append
        run_scan(ScanOptions(source=Path(source), out=Path(out), weights=Path(weights), frames={FRAMES}, batch_size=4,
                             workers=1), progress=False)

    if __name__ == "__main__":
        main()
""")


def test_killed_scan_resumes_without_redoing_finished_inputs(collection, weights, local_scan, tmp_path):
    root, _ = collection
    out = tmp_path / "results"  # a directory of Parquet parts
    script = tmp_path / "killed_scan.py"
    script.write_text(_KILLED_SCAN)
    after = 5
    proc = subprocess.run([sys.executable, str(script), str(root), str(out), str(weights), str(after)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    survived = read_results(out).to_pylist()
    assert len(survived) == after  # every acknowledged row survived the kill (in the journal)

    resumed = run_scan(options(root, out, weights), progress=False)
    assert resumed.skipped == after
    assert resumed.skipped + resumed.analyzed + resumed.duplicates + resumed.copied == resumed.inputs
    rows = read_results(out).to_pylist()
    by_path = {r["path"]: r for r in rows}
    for row in survived:  # not redone: the very same rows, timestamps included
        assert by_path[row["path"]] == row
    assert not list(out.glob("journal-*"))
    assert_same_rows(rows, local_scan[1])


def test_results_are_locked_while_scanning(tmp_path):
    out = tmp_path / "r.parquet"
    with open_store(out), pytest.raises(ResultsLockedError), open_store(out):
        pass


def test_store_recovers_a_journal_cut_mid_line(tmp_path, local_scan):
    rows = local_scan[1][:3]
    out = tmp_path / "parts"
    store = ParquetStore(out, flush_rows=2)
    store.__enter__()
    for row in rows:
        store.append(row)  # two go to a part, the third only to the journal
    journal = next(out.glob("journal-*.jsonl"))
    with open(journal, "a") as f:
        f.write('{"path": "half a li')  # the kill came mid-write: never acknowledged
    store._journal.close()
    store._lock_file.close()  # what a killed process leaves behind

    assert [r["path"] for r in read_results(out).to_pylist()] == sorted(r["path"] for r in rows)
    with ParquetStore(out) as again:
        assert again.load().to_pylist() == sorted(rows, key=lambda r: r["path"])
    assert not list(out.glob("journal-*"))


# -- crashes and the CLI ----------------------------------------------------------------------------
def test_decoder_crash_becomes_an_error_row(collection, detector, tmp_path):
    _, made = collection
    crash = tmp_path / "crash.jpg"
    shutil.copyfile(made["images"][0], crash)
    paths = [str(made["images"][1]), str(crash), str(made["videos"][0]), str(made["images"][2])]
    runner = LocalRunner(detector, DecodeConfig(detector.input_size, FRAMES), workers=1, decode=crashing_decode)
    done = {f.path: f.outcome for f in runner.run(paths)}
    assert set(done) == set(paths)
    assert done[str(crash)].type == "DecoderCrashError" and "139" in done[str(crash)].message
    assert all(getattr(done[p], "prediction", None) in ("REAL", "FAKE") for p in paths if p != str(crash))


def test_cli_scan_jsonl_and_summary(collection, weights, tmp_path):
    root, made = collection
    out, summary_file = tmp_path / "cli.jsonl", tmp_path / "summary.json"
    args = ["scan", str(root), "--out", str(out), "-w", str(weights), "--frames", str(FRAMES), "--workers", "1",
            "--summary-json", str(summary_file)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "scan summary" in result.output and "failures by type" in result.output
    summary = json.loads(summary_file.read_text())
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert summary["written"] == len(rows) == summary["inputs"]
    assert summary["verdicts"]["ERROR"] == len(made["broken"])

    bad = CliRunner().invoke(app, ["scan", str(tmp_path / "nothing"), "--out", str(out), "-w", str(weights)])
    assert bad.exit_code == 2 and "no such file or directory" in " ".join(bad.output.split())


def test_replica_core_groups_do_not_overlap(tmp_path):
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs CPU affinity and 2 cores")
    registry = tmp_path / "cores.json"
    mine = sorted(os.sched_getaffinity(0))[0]
    # A live replica (this test process) holds one core; a dead one's claim must not count.
    registry.write_text(json.dumps({str(os.getpid()): [mine], "999999999": sorted(os.sched_getaffinity(0))}))
    code = ("import os, sys; from pathlib import Path; from mffmoe.scan.cores import claim_cores; "
            "print(claim_cores(1, Path(sys.argv[1])), sorted(os.sched_getaffinity(0)))")
    out = subprocess.run([sys.executable, "-c", code, str(registry)], capture_output=True, text=True, check=True)
    claimed, pinned = out.stdout.strip().split("] ", 1)
    assert mine not in json.loads(claimed + "]") and json.loads(pinned) == json.loads(claimed + "]")
    claims = json.loads(registry.read_text())
    assert "999999999" not in claims and claims[str(os.getpid())] == [mine]


def test_jsonl_results_that_are_a_directory_are_a_typed_error(tmp_path):
    out = tmp_path / "results.jsonl"
    out.mkdir()
    with pytest.raises(ScanError, match="is a directory"), open_store(out) as store:
        store.load()
