"""``python -m analyses.cli`` (used under ``torchrun``) is the ``landscape`` command."""

import sys

from analyses.cli import main

sys.exit(main())
