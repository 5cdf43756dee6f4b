"""Old code against new code on the CPU sweep: alternate runs of ``cpu_occupancy_sweep.py``.

Each round runs the sweep once from each source tree (old, new, then new, old in the next
round, ...), each in a fresh process with the same Python, so a drift of the machine's speed hits
both alike. Per (case, H, method) it reports the median over rounds of each side's time per step
and of its speed-up over ``torch.nn.GRU`` measured in the same process (the ratio that a loaded
machine moves least), and new over old.

    python benchmarks/ab_sweep.py --old ../old-checkout --new . --rounds 3 --out ab.json

``--old`` and ``--new`` are checkouts of this repository (their ``src`` is put first on
``PYTHONPATH``; the sweep script of each checkout is the one run). Extra arguments after ``--``
go to the sweep (e.g. ``-- --real --repeats 9``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SWEEP = Path("benchmarks") / "cpu_occupancy_sweep.py"


def run_sweep(tree: Path, out: Path, extra: list[str]) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    cmd = [sys.executable, str(tree / SWEEP), "--out", str(out), *extra]
    subprocess.run(cmd, check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)
    return json.loads(out.with_suffix(".json").read_text())["rows"]


def summarise(runs: dict[str, list[list[dict]]]) -> list[dict]:
    """Median time and speed-up per (case, H, method) and side, and new over old."""
    table: dict[tuple, dict[str, dict[str, list[float]]]] = {}
    for side, rounds in runs.items():
        for rows in rounds:
            for r in rows:
                key = (r["case"], r["hidden_size"], r["method"])
                cell = table.setdefault(key, {}).setdefault(side, {"us": [], "speedup": []})
                cell["us"].append(r["us_per_step"])
                cell["speedup"].append(r["speedup"])
    out = []
    for (case, hidden, method), sides in table.items():
        if set(sides) != {"old", "new"}:
            continue
        row = {"case": case, "hidden_size": hidden, "method": method}
        for side in ("old", "new"):
            row[f"{side}_us"] = statistics.median(sides[side]["us"])
            row[f"{side}_speedup"] = statistics.median(sides[side]["speedup"])
        row["new_over_old_us"] = row["new_us"] / row["old_us"]
        row["new_over_old_speedup"] = row["new_speedup"] / row["old_speedup"]
        out.append(row)
    return out


def markdown(rows: list[dict], rounds: int) -> str:
    lines = [
        f"| case | H | method | old µs/step | new µs/step | new/old time | old vs nn.GRU "
        f"| new vs nn.GRU | (medians of {rounds} rounds) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['hidden_size']} | {r['method']} | {r['old_us']:.1f} "
            f"| {r['new_us']:.1f} | {r['new_over_old_us']:.2f} | {r['old_speedup']:.2f}x "
            f"| {r['new_speedup']:.2f}x | |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the old code")
    parser.add_argument("--new", type=Path, required=True, help="checkout of the new code")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the summary rows as JSON here")
    args = parser.parse_args(argv)
    runs: dict[str, list[list[dict]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            order = ("old", "new") if k % 2 == 0 else ("new", "old")
            for side in order:
                tree = (args.old if side == "old" else args.new).resolve()
                out = Path(tmp) / f"{side}-{k}"
                runs[side].append(run_sweep(tree, out, extra))
                sys.stderr.write(f"round {k + 1}/{args.rounds}: {side} done\n")
    rows = summarise(runs)
    if args.out is not None:
        args.out.write_text(json.dumps({"rounds": args.rounds, "rows": rows}, indent=1) + "\n")
    sys.stdout.write(markdown(rows, args.rounds) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
