"""Whether the current forward is being traced (torch.export, torch.onnx.export(dynamo=True), torch.compile).

Why: the eager path caches masks, gathered biases and mask analyses by tensor identity, storage pointer or content,
and picks kernels by data (``.item()``). A trace sees fake tensors, so the traced path builds those values from
shapes inside the graph instead and never reads or writes a cache (a failed trace cannot poison a later eager run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch


def tracing() -> bool:
    """True inside torch.export / dynamo tracing; the eager path is then replaced by a shape-only one."""
    return bool(torch.compiler.is_compiling() or torch.compiler.is_exporting())


def exporting() -> bool:
    """True inside torch.export (and so torch.onnx.export(dynamo=True)): portable formulations are preferred there."""
    return bool(torch.compiler.is_exporting())


TRACE_MESSAGE = (
    "attention: PnP-Nystra reads the mask's and the landmarks' values and cannot be traced by torch.export "
    'with a mask computed in the graph; patch the model to Exact() attention (attention="exact") or build the '
    "mask under vsnystra.attention.tracing.real_tensors()"
)


@contextlib.contextmanager
def real_tensors() -> Iterator[None]:
    """Inside torch.export: run shape-only code (shift masks, mask analyses) on real tensors, so their results can
    be cached like eager ones and enter the exported graph as constants. A no-op outside torch.export.

    Why private torch API: non-strict export runs Python under fake-tensor and proxy modes; these two context
    managers are how torch's own export passes compute real constants during a trace.
    """
    if not exporting():
        yield
        return
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

    with unset_fake_temporarily(), disable_proxy_modes_tracing():
        yield


_TWIN = "_vsnystra_real_twin"


def with_real_twin(traced: torch.Tensor, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``traced`` (a mask built in the graph), carrying the same values as a real tensor from ``build()`` (run under
    :func:`real_tensors`) for analyses that read values. Only in torch.export; the graph itself never holds the
    real tensor (constants inside submodules break torch.export's decompositions for ONNX)."""
    if exporting():
        with real_tensors():
            setattr(traced, _TWIN, build())
    return traced


def real_values(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or the real twin attached by :func:`with_real_twin` when ``t`` is a trace's fake tensor."""
    twin = getattr(t, _TWIN, None)
    return twin if isinstance(twin, torch.Tensor) else t


def is_fake(t: torch.Tensor) -> bool:
    """A tensor of a trace (no values), as opposed to a real one (possibly a constant built by real_tensors)."""
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


def refuse_trace(t: torch.Tensor | None = None) -> None:
    """Raise before any cache is touched when torch.export traces a data-dependent path on a fake tensor ``t``
    (any, when None): its Python runs for real on fake tensors, which must not be cached. torch.compile keeps
    graph-breaking there as before."""
    if exporting() and (t is None or is_fake(t)):
        raise NotImplementedError(TRACE_MESSAGE)
