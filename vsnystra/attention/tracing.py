"""Whether the current forward is being traced (torch.export, torch.onnx.export(dynamo=True), torch.compile).

Why: the eager path caches masks, gathered biases and mask analyses by tensor identity, storage pointer or content,
and picks kernels by data (``.item()``). A trace sees fake tensors, so the traced path builds those values from
shapes inside the graph instead and never reads or writes a cache (a failed trace cannot poison a later eager run).
"""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True inside torch.export / dynamo tracing; the eager path is then replaced by a shape-only one."""
    return bool(torch.compiler.is_compiling() or torch.compiler.is_exporting())


def exporting() -> bool:
    """True inside torch.export (and so torch.onnx.export(dynamo=True)): portable formulations are preferred there."""
    return bool(torch.compiler.is_exporting())


TRACE_MESSAGE = (
    "attention: PnP-Nystra reads the mask's and the landmarks' values and cannot be traced by torch.export; "
    'patch the model to Exact() attention (attention="exact") before exporting'
)


def refuse_trace() -> None:
    """Raise before any cache is touched when torch.export traces a data-dependent path (its Python runs for real on
    fake tensors, which must not be cached); torch.compile keeps graph-breaking there as before."""
    if exporting():
        raise NotImplementedError(TRACE_MESSAGE)
