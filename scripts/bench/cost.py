"""Cost of P, the loss and the gradient: through the blocks (the lab) against dense powers of A.

The lab never forms A^h: P = W_h ... W_1 and the closed-form gradient cost what the list of
matrices costs. The dense alternative computes A^h (n x n, n = sum(dims)) and differentiates it.
Both are timed side by side in one process (best of --repeat), single-threaded, and checked to agree.

    python -m scripts.bench.cost                       # width 256, depth 8, and the Figure 1 net
    python -m scripts.bench.cost --out docs/benchmarks/cost.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlnlab.lab.script_args import ScriptParser, integer
from scripts.bench._out import DOCS, check_out, ready_out


def parse(argv=None) -> argparse.Namespace:
    """The arguments, checked (a bad one: one line, exit 2); the report's folder made."""
    ap = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=integer(1, 1000, "timings, the best kept"), default=5)
    ap.add_argument("--out", type=Path, default=DOCS / "cost.md")
    args = ap.parse_args(argv)
    args.out = check_out(args.out)
    return args


def main(argv=None) -> None:
    args = parse(argv)
    ready_out(args.out)  # the report's folder, before minutes of work
    # the body (torch, the core) after the arguments: a refusal takes 0.05 s, not 1.5 s of imports
    from scripts.bench._cost import report

    text = report(args.repeat)
    print(text)
    args.out.write_text(text)
    print(f"report written to {args.out}")


if __name__ == "__main__":
    main()
