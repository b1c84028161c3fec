"""``python3 -m df4lcz_plugin``: the engine's command line (``cli``)."""

import sys

from .cli import main

sys.exit(main())
