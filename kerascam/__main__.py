"""``python -m kerascam``: the same as the installed ``kerascam`` command."""

import sys

from kerascam.cli import main

if __name__ == "__main__":
    sys.exit(main())
