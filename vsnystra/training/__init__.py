"""Training recipe for the bundled compact defaults (``python -m vsnystra.training --help``).

Not imported by the filters or the runtime: it exists so that the shipped checkpoints can be reproduced.
"""
