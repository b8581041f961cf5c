"""``python -m vsnystra.training``: see vsnystra.training.cli."""

from vsnystra.training.cli import main

raise SystemExit(main())
