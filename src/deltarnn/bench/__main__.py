"""``python -m deltarnn.bench``: the benchmark harness from the command line."""

from .cli import cli_main

raise SystemExit(cli_main())
