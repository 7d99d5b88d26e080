"""`python -m netscope.cli`: the `netscope` command without its console script."""
import sys

from . import main

sys.exit(main())
