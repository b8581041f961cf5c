"""``python -m vsnystra`` runs the command line."""

import sys

from vsnystra.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
