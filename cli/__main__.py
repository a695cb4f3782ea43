"""``python -m cli``: the same as the ``memory-service`` console script."""

import sys

from cli.main import main

sys.exit(main())
