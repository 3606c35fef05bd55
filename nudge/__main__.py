"""``python -m nudge`` is the ``nudge`` command."""

import sys

from nudge.cli import main

sys.exit(main())
