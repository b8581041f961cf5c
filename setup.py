"""Build hooks for vsnystra: compile the native VapourSynth shim next to the Python package.

All metadata lives in pyproject.toml. This file only adds a build step that puts
``vapoursynth/plugins/nystra/{libnystra.so, manifest.vs}`` into the wheel, so that VapourSynth (R75+) autoloads
``core.nystra`` with no LoadPlugin and no import. The compile logic is shared with the editable-install helper
(``python -m vsnystra.vs.build_shim --install``) through ``vsnystra/vs/build_shim.py``.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent


def _build_shim() -> ModuleType:
    """Load the shared build helper by path (the package itself is not importable while it is being built)."""
    spec = importlib.util.spec_from_file_location("_vsnystra_build_shim", HERE / "vsnystra" / "vs" / "build_shim.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class BuildPyWithShim(build_py):
    """build_py, plus the compiled shim under ``vapoursynth/plugins/nystra`` in the build tree."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable installs: scripts/setup.sh runs `python -m vsnystra.vs.build_shim --install`
        shim = _build_shim()
        out = Path(self.build_lib) / "vapoursynth" / "plugins" / shim.PLUGIN_SUBDIR
        shim.build_plugin(
            out, source=HERE / "csrc" / "nystra_shim.c", manifest=HERE / "plugin_manifest" / "nystra.json"
        )
        self._shim_outputs = [str(out / f"{shim.LIBRARY_NAME}.so"), str(out / "manifest.vs")]
        self._shim_outputs += self._bundle_models()

    def _bundle_models(self) -> list[str]:
        """The bundled default models (models/: index, checkpoints, cards) inside the package, where
        vsnystra.zoo.models_dir() looks first, so a pip-installed vsnystra has its defaults."""
        src = HERE / "models"
        dst = Path(self.build_lib) / "vsnystra" / "models"
        dst.mkdir(parents=True, exist_ok=True)
        outputs = []
        for f in sorted(src.iterdir()) if src.is_dir() else []:
            if f.suffix in (".json", ".pth", ".md") and f.is_file():
                shutil.copyfile(f, dst / f.name)
                outputs.append(str(dst / f.name))
        return outputs

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *getattr(self, "_shim_outputs", [])]


class PlatformWheel(bdist_wheel):
    """One wheel per platform, not per Python: the shim links no libpython (``py3-none-<platform>``)."""

    def get_tag(self) -> tuple[str, str, str]:
        _, _, plat = super().get_tag()
        return "py3", "none", plat


class BinaryDistribution(Distribution):
    """The wheel carries a native library, so it must be platform-specific."""

    def has_ext_modules(self) -> bool:
        return True


setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildPyWithShim, "bdist_wheel": PlatformWheel})
