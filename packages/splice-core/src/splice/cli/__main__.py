"""``python -m splice.cli ...``: the ``splice`` command, e.g. under ``torchrun -m splice.cli run``."""

import sys

from splice.cli import main

sys.exit(main())
