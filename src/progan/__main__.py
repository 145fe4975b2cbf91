"""``python -m progan`` (also what ``torchrun -m progan`` runs)."""

import sys

from progan.cli import main

sys.exit(main())
