"""Command-line interface (``deltarnn`` and ``python -m deltarnn``)."""
