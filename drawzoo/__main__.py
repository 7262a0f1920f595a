"""``python -m drawzoo`` (and ``torchrun -m drawzoo``) is the ``drawzoo`` command."""

import sys

from .cli import main

sys.exit(main())
