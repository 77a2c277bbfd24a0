"""`python -m lld_probe ...` (also under torchrun: `torchrun --nproc_per_node 2 -m lld_probe train ...`)."""

import sys

from .cli import main

sys.exit(main())
