"""`python -m ris.cli`: the `ris` command without the console script."""

import sys

from ris.cli.main import main

sys.exit(main())
