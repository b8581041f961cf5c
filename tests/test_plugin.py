"""The native shim: registration from the manifest, autoloading, the Python bridge, errors, threads, cores.

Needs the plugin installed in the venv (scripts/setup.sh). Most tests swap in a fake implementation module through
``sys.modules`` so that they exercise the shim and bridge alone, fast and without torch.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
import types
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vsnystra.vs import build_shim

vs = pytest.importorskip("vapoursynth")

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_PATH = REPO_ROOT / "plugin_manifest" / "nystra.json"

MANIFEST = json.loads(MANIFEST_PATH.read_text())
NS = MANIFEST["namespace"]
IMPL_MODULE = MANIFEST["python_module"]
MODELS = sorted(MANIFEST["functions"])


@pytest.fixture(scope="module")
def plugin() -> Any:
    core = vs.core
    if not hasattr(core, NS):
        pytest.fail(f"core.{NS} is not loaded; fix: run scripts/setup.sh (builds and installs the shim)")
    return getattr(core, NS)


@pytest.fixture
def fake_impl(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, Callable[..., Any]], None]]:
    """Install functions into a stand-in for the implementation module (restored afterwards)."""
    module = types.ModuleType(IMPL_MODULE)
    monkeypatch.setitem(sys.modules, IMPL_MODULE, module)

    def install(name: str, fn: Callable[..., Any]) -> None:
        setattr(module, name, fn)

    yield install


def rgbs(length: int = 3, **props: Any) -> Any:
    clip = vs.core.std.BlankClip(format=vs.RGBS, width=24, height=16, length=length)
    return clip.std.SetFrameProps(**props) if props else clip


def test_manifest_equals_running_plugin(plugin: Any) -> None:
    assert plugin.identifier == MANIFEST["identifier"]
    assert plugin.namespace == MANIFEST["namespace"]
    assert plugin.name == MANIFEST["description"]
    assert tuple(plugin.version) == tuple(MANIFEST["version"])
    functions = {f.name: f for f in plugin.functions()}
    assert set(functions) == {*MANIFEST["functions"], build_shim.IMPL_HOOK}
    stale = "the installed shim differs from plugin_manifest/nystra.json; fix: rerun scripts/setup.sh"
    for name, spec in MANIFEST["functions"].items():
        assert functions[name].signature == build_shim.signature(spec["args"]), f"{name}: {stale}"
        assert functions[name].return_signature == build_shim.signature(spec["returns"]), f"{name}: {stale}"
        assert "any" not in functions[name].signature.split(";")[-2], "typed signatures only"
    library = Path(plugin.plugin_path)
    assert library.name == "libnystra.so" and library.parent.name == "nystra"
    assert (library.parent / "manifest.vs").read_text().split() == ["[VapourSynth", "Manifest", "V1]", "libnystra"]


def test_generated_header_lists_every_function() -> None:
    header = build_shim.generate_header(build_shim.load_manifest(MANIFEST_PATH))
    for name, spec in MANIFEST["functions"].items():
        assert f'{{"{name}", "{build_shim.signature(spec["args"])}", "clip:vnode;"}}' in header
    with pytest.raises(ValueError, match="bad argument spec"):
        build_shim.signature([["clip", "vnode"], ["tile", "ints", "opt"]])


def test_autoloads_without_importing_vsnystra(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from vapoursynth import core
        plugin = core.nystra
        text = str(plugin)
        names = sorted(f.name for f in plugin.functions())
        json.dump({"names": names, "imported": "vsnystra" in sys.modules, "repr": text}, sys.stdout)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(MODELS) <= set(out["names"])
    assert out["imported"] is False


def test_arguments_reach_python_as_plain_values(plugin: Any, fake_impl: Any) -> None:
    seen: dict[str, Any] = {}

    def swinir(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return kwargs["clip"].std.SetFrameProps(via="fake")

    fake_impl("SwinIR", swinir)
    clip = rgbs()
    out = plugin.SwinIR(clip, model="x2.pth", tile=[64], tile_overlap=8, window=8, attention="nystra")
    assert out.get_frame(0).props["via"] == "fake"
    assert seen["model"] == "x2.pth" and seen["attention"] == "nystra"
    assert seen["tile"] == [64] and seen["tile_overlap"] == 8 and seen["window"] == 8
    assert isinstance(seen["clip"], vs.VideoNode) and seen["clip"].num_frames == 3
    seen.clear()
    out = clip.nystra.SwinIR(tile=[64, 32])  # method form
    assert seen == {"clip": seen["clip"], "tile": [64, 32]}
    assert out.num_frames == 3


def test_python_exception_becomes_vs_error(plugin: Any, fake_impl: Any) -> None:
    def uformer(**kwargs: Any) -> Any:
        raise ValueError("window 7 does not divide 24 (marker-4711)")

    fake_impl("Uformer", uformer)
    with pytest.raises(vs.Error, match=r"nystra\.Uformer: ValueError: window 7 does not divide 24 \(marker-4711\)"):
        plugin.Uformer(rgbs())


def test_filters_own_message_is_kept(plugin: Any, fake_impl: Any) -> None:
    def rvrt(**kwargs: Any) -> Any:
        raise vs.Error("nystra.RVRT: clip must be RGBS or RGBH, got YUV420P8; convert with core.resize.Bicubic")

    fake_impl("RVRT", rvrt)
    with pytest.raises(vs.Error) as info:
        plugin.RVRT(rgbs())
    assert "nystra.RVRT: clip must be RGBS or RGBH, got YUV420P8" in str(info.value)
    assert "nystra.RVRT: Error:" not in str(info.value)


def test_non_clip_return_is_an_error(plugin: Any, fake_impl: Any) -> None:
    fake_impl("SwinIR", lambda **kwargs: 42)
    with pytest.raises(vs.Error, match=r"nystra\.SwinIR: the Python implementation .* returned no clip"):
        plugin.SwinIR(rgbs())


def test_missing_implementation_module_is_a_clear_error(plugin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, IMPL_MODULE, None)  # makes the import fail like a missing module
    with pytest.raises(
        vs.Error, match=rf"nystra\.RVRT: the Python implementation {IMPL_MODULE}\.RVRT is not available"
    ):
        plugin.RVRT(rgbs())


def test_real_filters_reject_a_bad_format(plugin: Any) -> None:
    """With vsnystra.vs.filters present, its own validation message surfaces; without it, the bridge's message."""
    import importlib.util

    yuv = vs.core.std.BlankClip(format=vs.YUV420P8, width=64, height=48, length=2)
    with pytest.raises(vs.Error) as info:
        plugin.SwinIR(yuv)
    message = str(info.value)
    assert "nystra.SwinIR" in message
    if importlib.util.find_spec(IMPL_MODULE) is None:
        assert f"{IMPL_MODULE}.SwinIR is not available" in message
    else:
        assert "is not available" not in message, message
        assert "YUV420P8" in message, message


def test_set_impl_outside_a_call_is_rejected_and_leaves_no_state(plugin: Any, fake_impl: Any) -> None:
    with pytest.raises(vs.Error, match=r"nystra\.SetImpl: internal hook"):
        plugin.SetImpl(name="SwinIR", func=lambda **kwargs: rgbs(9))
    fake_impl("SwinIR", lambda **kwargs: kwargs["clip"].std.SetFrameProps(current=1))
    out = plugin.SwinIR(rgbs(2))
    assert out.num_frames == 2 and out.get_frame(0).props["current"] == 1


def test_nested_calls(plugin: Any, fake_impl: Any) -> None:
    fake_impl("Uformer", lambda **kwargs: kwargs["clip"].std.SetFrameProps(inner=1))
    fake_impl("SwinIR", lambda **kwargs: plugin.Uformer(kwargs["clip"]).std.SetFrameProps(outer=1))
    props = plugin.SwinIR(rgbs()).get_frame(0).props
    assert props["inner"] == 1 and props["outer"] == 1


def test_concurrent_calls_from_two_threads(plugin: Any, fake_impl: Any) -> None:
    import time

    def make(tag: int) -> Callable[..., Any]:
        def impl(**kwargs: Any) -> Any:
            time.sleep(0.002)  # widen the window for interleaving
            return kwargs["clip"].std.SetFrameProps(tag=tag, n=kwargs["iters"])

        return impl

    for tag, name in enumerate(MODELS):
        fake_impl(name, make(tag))
    core = vs.core
    old_threads = core.num_threads
    core.num_threads = 2
    errors: list[BaseException] = []
    results: dict[tuple[int, str, int], Any] = {}
    barrier = threading.Barrier(2)

    def worker(tid: int, names: list[str]) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(12):
                name = names[i % len(names)]
                clip = getattr(plugin, name)(rgbs(2), iters=i)
                results[(tid, name, i)] = clip.get_frame(i % 2).props
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t, n)) for t, n in enumerate((MODELS, MODELS[::-1]))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        core.num_threads = old_threads
    assert not errors, errors
    assert len(results) == 2 * 12
    for (_, name, i), props in results.items():
        assert props["tag"] == MODELS.index(name) and props["n"] == i


def test_plugin_works_in_a_recreated_core(tmp_path: Path) -> None:
    """Two VapourSynth environments (cores) one after the other in one process: the second gets a working
    plugin and no implementation left over from the first, since the shim keeps nothing between calls."""
    code = textwrap.dedent(
        f"""
        import sys, types
        import vapoursynth as vs

        class Policy(vs.EnvironmentPolicy):
            def __init__(self):
                self.current = None
            def on_policy_registered(self, api):
                self.api = api
            def get_current_environment(self):
                return self.current
            def set_environment(self, env):
                old, self.current = self.current, env
                return old
            def is_alive(self, env):
                return True

        policy = Policy()
        vs.register_policy(policy)
        module = types.ModuleType({IMPL_MODULE!r})
        sys.modules[{IMPL_MODULE!r}] = module
        for round in (1, 2):
            module.SwinIR = lambda round=round, **kw: kw["clip"].std.SetFrameProps(round=round)
            env = policy.api.create_environment()
            with policy.api.wrap_environment(env).use():
                core = vs.core
                clip = core.std.BlankClip(format=vs.RGBS, width=8, height=8, length=1)
                got = core.nystra.SwinIR(clip).get_frame(0).props["round"]
                assert got == round, (got, round)
                del core, clip
            policy.api.destroy_environment(env)
        sys.stderr.write("both cores OK\\n")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "both cores OK" in proc.stderr, proc.stderr


def test_shim_links_neither_python_nor_vapoursynth(tmp_path: Path) -> None:
    out = build_shim.build_plugin(tmp_path / "nystra")
    library = out / "libnystra.so"
    dynamic = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
    assert needed and needed <= {"libc.so.6", "ld-linux-x86-64.so.2", "libdl.so.2", "libpthread.so.0"}, needed
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert [s for s in symbols if not re.fullmatch(r"[0-9a-fA-F]+|[A-Za-z]", s)] == ["VapourSynthPluginInit2"]
    assert (out / "manifest.vs").read_text() == "[VapourSynth Manifest V1]\nlibnystra\n"


def test_wheel_carries_the_plugin(tmp_path: Path) -> None:
    """`pip install .` path: the wheel built by setup.py holds the shim where VapourSynth autoloads it."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("vsnystra-*.whl")
    assert wheel.name.endswith(("-py3-none-linux_x86_64.whl", "-py3-none-linux_aarch64.whl")), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {"vapoursynth/plugins/nystra/libnystra.so", "vapoursynth/plugins/nystra/manifest.vs"} <= names
        assert "vsnystra/vs/bridge.py" in names
        bundled = {f"vsnystra/models/{p.name}" for p in (REPO_ROOT / "models").iterdir() if p.suffix != ".tmp"}
        assert "vsnystra/models/zoo.json" in bundled and bundled <= names  # pip users get the defaults
        assert not any(n.startswith("vapoursynth/") and "nystra" not in n for n in names), "touches vapoursynth"


def test_fd_guard_keeps_native_writes_off_stdout() -> None:
    code = textwrap.dedent(
        """
        import os
        from vsnystra.vs.bridge import fd_stdout_to_stderr, python_stdout_to_stderr
        os.write(1, b"before;")
        with fd_stdout_to_stderr():
            os.write(1, b"native-inside;")
            print("python-inside", flush=True)
        with python_stdout_to_stderr():
            print("guarded-print")
        os.write(1, b"after;")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"before;after;"
    assert b"native-inside;" in proc.stderr and b"python-inside" in proc.stderr and b"guarded-print" in proc.stderr


C_HOST = r"""
#include <dlfcn.h>
#include <stdio.h>
#include "VapourSynth4.h"
int main(int argc, char **argv) {
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 2; }
    const VSAPI *(*get)(int) = (const VSAPI *(*)(int))dlsym(lib, "getVapourSynthAPI");
    const VSAPI *api = get(VAPOURSYNTH_API_VERSION);
    VSCore *core = api->createCore(0);
    VSPlugin *std = api->getPluginByNamespace("std", core);
    VSPlugin *ny = api->getPluginByNamespace("nystra", core);
    if (!ny) { fprintf(stderr, "nystra not autoloaded\n"); return 3; }
    VSMap *args = api->createMap();
    api->mapSetInt(args, "format", pfRGBS, maReplace);
    VSMap *blank = api->invoke(std, "BlankClip", args);
    VSMap *res = api->invoke(ny, "SwinIR", blank);
    const char *err = api->mapGetError(res);
    printf("%s\n", err ? err : "NO ERROR");
    api->freeMap(res); api->freeMap(blank); api->freeMap(args);
    api->freeCore(core);
    return 0;
}
"""


def test_host_without_python_gets_a_clear_error(tmp_path: Path) -> None:
    """A pure C host (no libpython in the process) autoloads the plugin; calling it is an error, not a crash."""
    import vapoursynth

    source = tmp_path / "host.c"
    source.write_text(C_HOST)
    host = tmp_path / "host"
    subprocess.run(
        ["cc", "-O0", f"-I{vapoursynth.get_include()}", str(source), "-o", str(host), "-ldl"], check=True, timeout=60
    )
    library = Path(vapoursynth.__file__).parent / "libvapoursynth.so.4"
    proc = subprocess.run([str(host), str(library)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "nystra.SwinIR: the CPython symbol Py_IsInitialized is not loaded in this process" in proc.stdout
