"""`python -m vampdiffusion.cli …` (what torchrun launches) is `vamp …`."""

import sys

from vampdiffusion.cli import main

sys.exit(main())
