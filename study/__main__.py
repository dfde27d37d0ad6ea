"""python -m study: the same as the `study` command."""

import sys

from .cli import main

sys.exit(main())
