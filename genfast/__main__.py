"""``python -m genfast`` is the ``genfast`` command."""
import sys

from genfast.cli import main

if __name__ == "__main__":
    sys.exit(main())
