"""``python -m train.fit``: :func:`train.fit.command_line.main`."""

import sys

from train.fit.command_line import main

if __name__ == "__main__":
    sys.exit(main())
