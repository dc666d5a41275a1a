"""``python -m invae``: the command line (also what ``torchrun -m invae`` launches)."""

import sys

from .app.cli import main

sys.exit(main())
