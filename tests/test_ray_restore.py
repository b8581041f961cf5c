"""`vsnystra restore --ray`: the same frames as the in-process run, lost workers and nodes, the CLI.

One local cluster per module (``ray.cluster_utils.Cluster``: a head without CPUs and two worker nodes of one CPU
each), bound to 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set before ray is imported) and shut down at the
end. The workers run the tiny temporal stand-in of restore_fakes (sent by value: workers cannot import tests/).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from restore_fakes import controlled_loaded, decoded, make_video, one_thread, tiny_loaded

from vsnystra.cli import distribute, ray_executor
from vsnystra.cli import main as cli_main
from vsnystra.cli.local_executor import LocalExecutor
from vsnystra.cli.media import EncodeSettings

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray (pip install vsnystra[ray])")

FFV1 = EncodeSettings(codec="ffv1")
SWINIR_X2 = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "parity" / "swinir_classical_x2.pth"
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    saved = {k: os.environ.get(k) for k in LOOPBACK}
    os.environ.update(LOOPBACK)  # read when ray is imported: every node on the loopback address
    import ray
    import restore_fakes
    from ray.cluster_utils import Cluster

    ray.cloudpickle.register_pickle_by_value(restore_fakes)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        c.add_node(num_cpus=1)
        ray.init(address=c.address, log_to_driver=False)
        c.wait_for_nodes()
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}  # loopback only
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("control")


@pytest.fixture(scope="module")
def executor(cluster: Any, control: Path) -> Iterator[ray_executor.RayExecutor]:
    """Two workers (one per node) for the whole module; the tests steer them through ``control``."""
    ex = ray_executor.connect("auto", functools.partial(controlled_loaded, str(control)), threads=1)
    try:
        assert ex.wait_ready(timeout=120) == 2
        yield ex
    finally:
        ex.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("in") / "clip.mkv", 16, cuts=(9,), codec="libx264")


@pytest.fixture(scope="module")
def reference(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The in-process restore of ``clip`` (one torch thread, like the workers)."""
    out = tmp_path_factory.mktemp("local")
    opts = distribute.Options(out_dir=out, encode=FFV1, segment_frames=4, progress=False)
    with one_thread():
        assert distribute.restore_files([clip], LocalExecutor(tiny_loaded()), opts).done
    return out / "clip.mkv"


def _on_ray(inputs: list[Path], out: Path, executor: Any) -> distribute.SegmentedSummary:
    opts = distribute.Options(out_dir=out, encode=FFV1, segment_frames=4, progress=False)
    return distribute.Driver(inputs, executor, opts).run()  # restore_files would close the shared workers


def _same(a: Path, b: Path) -> None:
    x, y = decoded(a), decoded(b)
    assert len(x[0]) == len(y[0]) == 16
    assert all(np.array_equal(p, q) for p, q in zip(x[0], y[0], strict=True))  # bit-identical frames
    assert x[1] == y[1] and x[2] == y[2] and x[2]  # same times, same audio packets


def test_cli_on_ray_x265_joins_into_one_stream(cluster: Any, tmp_path: Path) -> None:
    """First in the module: its own workers need the CPUs that the module's workers hold later."""
    if not SWINIR_X2.is_file():
        pytest.skip("shared fixtures missing")
    src = make_video(tmp_path / "s.mkv", 7, w=32, h=24, codec="libx264")
    argv = ["restore", str(src), "-o", str(tmp_path / "o"), "--model", str(SWINIR_X2), "--device", "cpu"]
    argv += ["--codec", "x265", "--preset", "ultrafast", "--segment-frames", "3", "--ray", cluster.address]
    assert cli_main.main(argv) == 0
    cmd = ["ffprobe", "-v", "error", "-count_frames", "-of", "json", "-select_streams", "v"]
    cmd += ["-show_entries", "stream=codec_name,nb_read_frames", str(tmp_path / "o" / "s.mkv")]
    probe = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert json.loads(probe.stdout)["streams"] == [{"codec_name": "hevc", "nb_read_frames": "7"}]


def test_ray_gives_the_frames_of_the_local_run_and_reports_a_bad_file(
    executor: Any, control: Path, clip: Path, reference: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(b"\x1a\x45\xdf\xa3 not a video" * 40)
    summary = _on_ray([clip, bad], tmp_path / "o", executor)
    text = summary.render()
    assert "1 done, 0 skipped, 1 failed" in text and f"FAILED {bad}" in text
    _same(reference, tmp_path / "o" / "clip.mkv")
    assert len(list(control.glob("started-*"))) == 2  # both nodes restored segments
    assert len([ln for ln in text.splitlines() if ln.strip().startswith("node ")]) == 2
    assert not (tmp_path / "o" / ".clip.mkv.segments").exists()


def test_ray_deinterlaces_one_frame_per_field_as_the_local_run(executor: Any, tmp_path: Path) -> None:
    from test_cli_checks import write_tff

    src = write_tff(tmp_path / "tff.mkv", n=7)

    def opts(out: Path) -> distribute.Options:
        return distribute.Options(out_dir=out, encode=FFV1, segment_frames=4, progress=False, deinterlace="field")

    with one_thread():
        assert distribute.restore_files([src], LocalExecutor(tiny_loaded()), opts(tmp_path / "local")).done
    assert distribute.Driver([src], executor, opts(tmp_path / "ray")).run().done
    local, ray = decoded(tmp_path / "local" / "tff.mkv"), decoded(tmp_path / "ray" / "tff.mkv")
    assert len(local[0]) == len(ray[0]) == 14  # one frame per field, planned as such on the cluster too
    assert all(np.array_equal(p, q) for p, q in zip(local[0], ray[0], strict=True))
    assert local[1] == ray[1] == [i / 50 for i in range(14)]


def test_a_worker_killed_mid_segment_is_retried(
    executor: Any, control: Path, clip: Path, reference: Path, tmp_path: Path
) -> None:
    (control / "crash").touch()
    try:
        summary = _on_ray([clip], tmp_path / "o", executor)
    finally:
        (control / "crash").unlink()
    assert (control / "crashed").exists()  # a worker did die (os._exit in the middle of a segment)
    assert summary.done and ", 1 retried)" in summary.render()
    _same(reference, tmp_path / "o" / "clip.mkv")


def test_a_node_removed_mid_job_is_survived(
    executor: Any, cluster: Any, control: Path, clip: Path, reference: Path, tmp_path: Path
) -> None:
    """Last in the module: it takes the worker node away (and puts one back)."""
    for p in control.glob("started-*"):
        p.unlink()
    assert executor.wait_ready(timeout=120) == 2  # the worker that crashed earlier is back
    (control / "slow").write_text("0.1")
    node = cluster.worker_nodes and next(iter(cluster.worker_nodes))
    result: dict[str, Any] = {}
    job = threading.Thread(target=lambda: result.update(s=_on_ray([clip], tmp_path / "o", executor)))
    job.start()
    try:
        deadline = time.monotonic() + 120
        while not (control / f"started-{node.node_id}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (control / f"started-{node.node_id}").exists(), "no segment started on the worker node"
        cluster.remove_node(node)  # its worker dies in the middle of a segment
        job.join(timeout=180)
    finally:
        (control / "slow").unlink()
    cluster.add_node(num_cpus=1)
    assert not job.is_alive()
    summary = result["s"]
    assert summary.done and ", 0 retried)" not in summary.render()
    _same(reference, tmp_path / "o" / "clip.mkv")
