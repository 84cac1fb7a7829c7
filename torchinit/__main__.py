"""``python -m torchinit``: the same command line as the ``torchinit`` script."""

import sys

from torchinit._tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
