"""`python -m dseqjepa_cli ...` (and, through dseqjepa_hub/__main__.py, `python -m dseqjepa_hub ...`)."""

import sys

from . import main

sys.exit(main())
