"""Official-weights download against a loopback HTTP server: full, truncated + resume, checksum mismatch."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from vsnystra import zoo

PAYLOAD = bytes((i * 7 + 3) % 251 for i in range(300_000))


@dataclass
class ServerState:
    cut_after: int | None = None  # close the connection after sending this many body bytes (once)
    ranges: list[str | None] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/moved/"):  # GitHub releases redirect to a CDN
            self.send_response(302)
            self.send_header("Location", self.path.replace("/moved/", "/rel/", 1))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not self.path.endswith("/model.pth"):
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        self.state.ranges.append(rng)
        start = 0
        if rng:
            start = int(rng.split("=", 1)[1].split("-", 1)[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.state.cut_after is not None:
            body = body[: self.state.cut_after]
            self.state.cut_after = None
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    handler = type("H", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/rel", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _entry(base: str, **kw: object) -> zoo.OfficialWeights:
    w = zoo.OfficialWeights("test-model", "rvrt", "denoise", "model.pth", base, "MIT", 0.3)
    return replace(w, **kw)  # type: ignore[arg-type]


def test_full_download(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, state = server
    seen: list[tuple[int, int | None]] = []
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    out = zoo.download(
        _entry(base, sha256=sha, size=len(PAYLOAD)), dest_dir=tmp_path, progress=lambda d, t: seen.append((d, t))
    )
    assert out == tmp_path / "model.pth"
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "model.pth.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert state.ranges == [None]
    # already there: verified, not fetched again
    zoo.download(_entry(base, sha256=sha), dest_dir=tmp_path)
    assert state.ranges == [None]


def test_truncated_then_resume(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, state = server
    state.cut_after = 100_000
    with pytest.raises(zoo.DownloadError, match=r"resume from .*model\.pth\.part \(100000 B\)"):
        zoo.download(_entry(base), dest_dir=tmp_path, retries=0)
    part = tmp_path / "model.pth.part"
    assert part.stat().st_size == 100_000
    assert not (tmp_path / "model.pth").exists()
    out = zoo.download(_entry(base, sha256=hashlib.sha256(PAYLOAD).hexdigest()), dest_dir=tmp_path)
    assert out.read_bytes() == PAYLOAD
    assert state.ranges == [None, "bytes=100000-"]


def test_offline_download_leaves_no_lock_and_names_no_missing_part(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: connection refused, as offline
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/rel"
    with pytest.raises(zoo.DownloadError) as err:
        zoo.download(_entry(dead), dest_dir=tmp_path, retries=1, backoff=0)
    assert ".part" not in str(err.value) and "check the network connection" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no 0-byte .lock, no .part


def test_a_finished_download_leaves_no_lock(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, _ = server
    zoo.download(_entry(base), dest_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_retry_resumes_within_one_call(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, state = server
    state.cut_after = 50_000
    out = zoo.download(_entry(base.replace("/rel", "/moved")), dest_dir=tmp_path, retries=2, backoff=0)
    assert out.read_bytes() == PAYLOAD
    assert state.ranges == [None, "bytes=50000-"]  # the Range header survives the redirect


def test_oversized_part_restarts(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, state = server
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD + b"junk")
    out = zoo.download(_entry(base), dest_dir=tmp_path)
    assert out.read_bytes() == PAYLOAD
    assert state.ranges == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_complete_part_is_finished_without_transfer(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, state = server
    (tmp_path / "model.pth.part").write_bytes(PAYLOAD)
    out = zoo.download(_entry(base, size=len(PAYLOAD)), dest_dir=tmp_path)
    assert out.read_bytes() == PAYLOAD
    assert state.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_checksum_mismatch_not_kept(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(zoo.ChecksumError, match="sha256"):
        zoo.download(_entry(base, sha256="0" * 64), dest_dir=tmp_path)
    assert not (tmp_path / "model.pth").exists()
    assert not (tmp_path / "model.pth.part").exists()
    with pytest.raises(zoo.ChecksumError, match="size"):
        zoo.download(_entry(base, size=len(PAYLOAD) + 1), dest_dir=tmp_path)
    assert not (tmp_path / "model.pth").exists()


def test_http_404_is_reported(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(zoo.DownloadError, match="404"):
        zoo.download(_entry(base, file="missing.pth"), dest_dir=tmp_path)


def test_catalogue_urls_and_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    w = zoo.OFFICIAL["rvrt-denoise-davis"]
    assert (
        w.url
        == "https://github.com/JingyunLiang/RVRT/releases/download/v0.0/006_RVRT_videodenoising_DAVIS_16frames.pth"
    )
    s = zoo.OFFICIAL["swinir-classical-x2"]
    assert (
        s.url
        == "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth"
    )
    assert zoo.OFFICIAL["uformer-b-sidd"].url is None
    monkeypatch.setenv(zoo.BASE_URL_ENV, "http://127.0.0.1:9/x/")
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path))
    assert w.url == "http://127.0.0.1:9/x/006_RVRT_videodenoising_DAVIS_16frames.pth"
    assert zoo.cached_path("rvrt-denoise-davis") == tmp_path / w.file
    with pytest.raises(zoo.DownloadError, match="weights import"):
        zoo.download("uformer-b-sidd")


def test_download_by_name_via_env(
    server: tuple[str, ServerState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = server
    monkeypatch.setenv(zoo.BASE_URL_ENV, base)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setitem(zoo.OFFICIAL, "test-model", _entry("https://unused.invalid"))
    assert zoo.download("test-model").read_bytes() == PAYLOAD


def test_import_file(tmp_path: Path) -> None:
    src = tmp_path / "Uformer_B.pth"
    src.write_bytes(b"abc")
    dest = tmp_path / "cache"
    out = zoo.import_file("uformer-b-sidd", src, dest_dir=dest)
    assert out == dest / "Uformer_B_SIDD.pth" and out.read_bytes() == b"abc"
    w = replace(zoo.OFFICIAL["uformer-b-gopro"], sha256="1" * 64)
    with pytest.raises(zoo.ChecksumError):
        zoo.import_file(w, src, dest_dir=dest)
    assert not (dest / "Uformer_B_GoPro.pth").exists()


def test_cli_download_then_resolve(
    server: tuple[str, ServerState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vsnystra import zoo
    from vsnystra.cli.main import main

    base, _ = server
    monkeypatch.setenv(zoo.BASE_URL_ENV, base)
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path))
    monkeypatch.setitem(zoo.OFFICIAL, "test-model", _entry("https://unused.invalid"))
    with pytest.raises(zoo.ModelNotFoundError, match="vsnystra weights download test-model"):
        zoo.resolve_model("test-model")
    assert main(["weights", "download", "test-model"]) == 0
    assert zoo.resolve_model("test-model") == tmp_path / "model.pth"
    assert "test-model" in capsys.readouterr().err  # progress goes to stderr
    assert main(["weights", "download", "test-model", "rvrt-denoise-davis"]) == 1  # second one: 404 on loopback
    assert main(["weights", "download", "test-mod*"]) == 0  # patterns; already there: verified, not fetched
    assert main(["weights", "download", "nothing-*"]) == 1
    assert not (tmp_path / zoo.OFFICIAL["rvrt-denoise-davis"].file).exists()


def test_concurrent_download_of_one_file_is_refused(server: tuple[str, ServerState], tmp_path: Path) -> None:
    import fcntl

    base, _ = server
    with (tmp_path / "model.pth.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(zoo.DownloadError, match="another process"):
            zoo.download(_entry(base), dest_dir=tmp_path)
    assert zoo.download(_entry(base), dest_dir=tmp_path).read_bytes() == PAYLOAD


def test_catalogue_is_package_data() -> None:
    """official.json is read through importlib.resources and listed as package data, so wheels carry it."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vsnystra"]
    assert any(fnmatch.fnmatch("zoo/official.json", p) for p in patterns)
    assert {w.arch for w in zoo.OFFICIAL.values()} == {"swinir", "uformer", "rvrt"}
    assert all(w.url or w.source for w in zoo.OFFICIAL.values())
