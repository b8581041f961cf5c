"""prefer_huge_pages: the user's choice wins, and torch really takes fewer page faults on large tensors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vsnystra.runtime import memory

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")

FAULTS = """
import resource, sys, torch
from vsnystra.runtime.memory import prefer_huge_pages
prefer_huge_pages()
n = 32 * 1024 * 256  # 32 MiB of float32, an activation of a mid-size layer
x = torch.empty(n); x.fill_(1); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    x = torch.empty(n); x.fill_(1); del x
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torch reads the variable on Linux only")
def test_sets_the_variable_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memory.THP_VARIABLE, raising=False)
    assert memory.prefer_huge_pages()
    assert memory.THP_VARIABLE in os.environ
    monkeypatch.setenv(memory.THP_VARIABLE, "0")
    assert not memory.prefer_huge_pages()
    assert os.environ[memory.THP_VARIABLE] == "0"


@pytest.mark.skipif(not THP.is_file() or "[never]" in THP.read_text(), reason="no transparent huge pages here")
def test_torch_takes_far_fewer_page_faults() -> None:
    def faults(env: dict[str, str]) -> float:
        out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    base = {k: v for k, v in os.environ.items() if k != memory.THP_VARIABLE}
    plain = faults({**base, memory.THP_VARIABLE: "0"})
    huge = faults(base)  # prefer_huge_pages() sets it
    assert plain > 4000  # 8192 pages of 4 KiB each
    assert huge < plain / 4
