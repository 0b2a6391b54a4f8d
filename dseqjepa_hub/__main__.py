"""`python -m dseqjepa_hub ...`: the `dseqjepa` command (the one place the hub package names the CLI)."""

import sys

from dseqjepa_cli import main

sys.exit(main())
