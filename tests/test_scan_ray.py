"""`mffmoe scan --ray` on a local Ray instance (2 CPUs): the same rows as a local scan, and resumable
across runners (a scan interrupted on Ray finishes locally without redoing anything)."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mffmoe.cli import app
from mffmoe.scan import ScanOptions, read_results, run_scan
from scan_helpers import assert_same_rows, make_collection, make_face_collection

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

FRAMES = 4


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("scan-ray-collection") / "media"
    return root, make_collection(root)


def options(source, out, weights, **kw) -> ScanOptions:
    return ScanOptions(source=Path(source), out=Path(out), weights=Path(weights), frames=FRAMES, batch_size=4,
                       **kw)


def test_ray_scan_gives_the_same_rows_as_a_local_scan(ray_cluster, collection, tiny_ckpt, tmp_path):
    root, made = collection
    ray_out = tmp_path / "ray.parquet"
    # Through the CLI, as a user would; Ray is already up, so the scan joins it.
    result = CliRunner().invoke(app, ["scan", str(root), "--out", str(ray_out), "-w", str(tiny_ckpt), "--frames",
                                      str(FRAMES), "--batch-size", "4", "--ray", "--replicas", "2"])
    assert result.exit_code == 0, result.output
    assert "2 model replica(s)" in " ".join(result.output.split())

    local = run_scan(options(root, tmp_path / "local.parquet", tiny_ckpt, workers=1), progress=False)
    ray_rows = read_results(ray_out).to_pylist()
    assert len(ray_rows) == local.inputs
    assert_same_rows(ray_rows, read_results(tmp_path / "local.parquet").to_pylist())
    assert sum(r["error_type"] is not None for r in ray_rows) == len(made["broken"])
    assert sum(r["duplicate_of"] is not None for r in ray_rows) == len(made["duplicates"])

    again = run_scan(options(root, ray_out, tiny_ckpt, ray="", replicas=2), progress=False)
    assert (again.skipped, again.analyzed, again.written) == (local.inputs, 0, 0)


def test_ray_scan_in_faces_mode_gives_the_same_rows_as_a_local_scan(ray_cluster, tiny_ckpt, tmp_path):
    made = make_face_collection(tmp_path / "faces")
    root = made["scene"].parent
    run_scan(options(root, tmp_path / "ray.parquet", tiny_ckpt, ray="", replicas=1, crop="faces"), progress=False)
    run_scan(options(root, tmp_path / "local.parquet", tiny_ckpt, workers=1, crop="faces"), progress=False)
    rows = read_results(tmp_path / "ray.parquet").to_pylist()
    assert_same_rows(rows, read_results(tmp_path / "local.parquet").to_pylist())
    by_name = {Path(r["path"]).name: r for r in rows}
    assert (by_name["scene.png"]["face_count"], by_name["free.png"]["in_scope"]) == (2, False)
    assert by_name["two.mp4"]["crop"] == "faces" and by_name["two.mp4"]["persons"] >= 2


def test_scan_interrupted_on_ray_resumes_locally(ray_cluster, collection, tiny_ckpt, tmp_path):
    root, _ = collection
    out = tmp_path / "results"
    seen: list[dict] = []

    def interrupt(row: dict) -> None:
        seen.append(row)
        if len(seen) == 4:
            raise KeyboardInterrupt  # Ctrl-C half-way

    with pytest.raises(KeyboardInterrupt):
        run_scan(options(root, out, tiny_ckpt, ray="", replicas=2), progress=False, on_row=interrupt)
    kept = read_results(out).to_pylist()
    assert [r["path"] for r in kept] == sorted(r["path"] for r in seen)

    resumed = run_scan(options(root, out, tiny_ckpt, workers=1), progress=False)
    assert resumed.skipped == len(kept)
    assert resumed.skipped + resumed.analyzed + resumed.duplicates + resumed.copied == resumed.inputs
    rows = {r["path"]: r for r in read_results(out).to_pylist()}
    assert all(rows[r["path"]] == r for r in kept)  # the rows made on Ray were not redone
    assert len(rows) == resumed.inputs


def test_decoder_crash_on_ray_becomes_an_error_row(ray_cluster, collection, tiny_ckpt, tmp_path):
    import shutil

    from ray import cloudpickle

    import scan_helpers
    from mffmoe.config import DetectorConfig
    from mffmoe.scan.decode import DecodeConfig
    from mffmoe.scan.job import resolve_crop, weights_info
    from mffmoe.scan.ray_runner import RayRunner, ReplicaSpec
    from mffmoe.scan.schema import weights_hash

    # Ray workers cannot import the tests folder (pytest puts it on sys.path in this process only)
    cloudpickle.register_pickle_by_value(scan_helpers)
    _, made = collection
    crash = tmp_path / "crash.png"
    shutil.copyfile(made["images"][2], crash)
    paths = [str(made["images"][0]), str(crash), str(made["videos"][1]), str(made["broken"][0])]
    config = DetectorConfig(weights=tiny_ckpt, engine="torch", device="cpu", batch_size=4, frames=FRAMES,
                            crop="frame")
    info = weights_info(config)
    spec = ReplicaSpec(config, weights_hash=weights_hash(info))
    runner = RayRunner(spec, DecodeConfig.of(resolve_crop(config, info), info.input_size), replicas=1,
                       decode_fn=scan_helpers.crashing_decode_batch)
    with runner:
        done = {f.path: f.outcome for f in runner.run(paths)}
    assert set(done) == set(paths)
    assert done[str(crash)].type == "DecoderCrashError"
    assert done[paths[0]].prediction in ("REAL", "FAKE") and done[paths[2]].media_type == "video"
    assert done[paths[3]].type == "CorruptMediaError"
