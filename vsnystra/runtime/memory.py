"""Large CPU tensors on transparent huge pages.

Why: glibc hands every large tensor a fresh ``mmap`` and returns it on free, so each activation of a restoration
model (tens of MB per layer) is faulted in 4 KiB page by page on every forward. torch's CPU allocator can instead ask
the kernel for 2 MiB pages on blocks of 2 MiB and more (``THP_MEM_ALLOC_ENABLE=1``), 512 times fewer faults: on the
2-core KVM guest this project is built on, Uformer-B at 256x256 ran 1.13x faster at its trained window and 1.05x at
window 64, SwinIR-M x2 1.27x at its trained window (benchmarks/models.py, 1 thread, with and without the
variable). torch reads the variable once, at its first CPU allocation, so the front ends set it before they load a
model: the VapourSynth bridge before it imports the filters, and the command lines at start. A value the user has
set wins, and where torch already allocated (another plugin imported it first) nothing changes.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def prefer_huge_pages() -> bool:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` unless the user chose a value; True when huge pages are (now) requested."""
    if not sys.platform.startswith("linux"):
        return False  # the variable only exists in torch's Linux allocator
    if THP_VARIABLE in os.environ:
        return os.environ[THP_VARIABLE].strip() == "1"
    os.environ[THP_VARIABLE] = "1"
    log.debug("vsnystra: %s=1 (large CPU tensors on transparent huge pages)", THP_VARIABLE)
    return True
