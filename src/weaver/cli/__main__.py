"""`python -m weaver.cli VERB ...`, the same as the `weaver` console script."""

import sys

from weaver.cli import main

sys.exit(main())
