"""`python -m trackpoint.cli`."""

import sys

from . import main

sys.exit(main())
