"""Per-frame latency on live streams, batch 1, one thread: ``deltarnn bench --stream``, saved.

Cases: the 2-layer FSDD GRU at its selected Θ and at Θ = 0 (trained into ``--fsdd-run`` the
first time, a few minutes; see ``deltarnn.bench.fsdd_model``), ``LSTMCell(128, 128)`` and GRU
H = 256 and 1024 at 5/10/20 % occupancy and Θ = 0. Methods, interleaved: the dense baselines
(``nn.GRU``/``LSTM`` per frame, the torch cells, onnxruntime) and the delta paths (``stream``,
the cells, hand-chained ``CPUStreamer``s, ``module.streamer`` float and int8 where present).
Writes ``<out>.json`` (rows, targets, config, environment) and ``<out>.md`` (table, targets)::

    python benchmarks/streaming.py --out benchmarks/results/streaming

Any other option goes to ``deltarnn bench --stream`` (``--help`` lists them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deltarnn.bench import cli_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--out", default="benchmarks/results/streaming", help="path, no suffix")
    args, rest = parser.parse_known_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    forwarded = ["--stream", "--json", f"{out}.json", "--markdown", f"{out}.md", *rest]
    return cli_main(forwarded)


if __name__ == "__main__":
    sys.exit(main())
