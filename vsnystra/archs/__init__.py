"""Architectures: one module per model family, detected from state-dict keys."""
