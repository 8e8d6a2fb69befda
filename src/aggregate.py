"""``python -m src.aggregate PATH...``: the entry point of :mod:`src.report.aggregate`."""

import sys

from src.report.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
