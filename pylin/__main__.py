"""`python -m pylin …`: the `pylin` command line (pylin.cli).  Tests: tests/test_cli.py."""

import sys

from .cli import main

sys.exit(main())
