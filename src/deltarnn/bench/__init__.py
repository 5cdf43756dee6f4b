"""One timing harness shared by the ``deltarnn bench`` command and ``benchmarks/`` scripts.

* :func:`run_benchmark` (a :class:`BenchConfig` in, :class:`BenchRow` rows out),
* :func:`format_table` / :func:`to_json` to print them,
* :func:`add_arguments` / :func:`run` for a CLI subcommand, :func:`cli_main` for scripts,
* :func:`compute_speedup_bound`, the bound every measured speed-up is compared with.
"""

from .bound import compute_speedup_bound
from .cli import add_arguments, cli_main, config_from_args, run
from .harness import METHODS, BenchConfig, BenchRow, run_benchmark, threads
from .inputs import calibrate, controlled_sequence, fsdd_log_mel
from .report import format_table, to_json

__all__ = [
    "METHODS",
    "BenchConfig",
    "BenchRow",
    "add_arguments",
    "calibrate",
    "cli_main",
    "config_from_args",
    "controlled_sequence",
    "compute_speedup_bound",
    "format_table",
    "fsdd_log_mel",
    "run",
    "run_benchmark",
    "threads",
    "to_json",
]
