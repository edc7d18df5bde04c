"""Validate the grounding rules (evals/grounding.py) on logged runs: false positives on the real conclusions,
false negatives on perturbed copies (evals/grounding_validation.py). Prints the Markdown table of
docs/GROUNDING.md.

    python benchmarks/grounding_validation.py RUN_DIR [RUN_DIR ...]
    python benchmarks/grounding_validation.py --bench OUT     # every run of an `interp-agent bench --out OUT`

Reads logs only (no model, no kernel).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.view import RunView
from evals.grounding_validation import KINDS, ValidationCounts, validate


def _rate(a: int, b: int) -> str:
    return "–" if b == 0 else f"{a}/{b} ({a / b:.0%})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="run directories")
    ap.add_argument("--bench", help="a bench output directory: use every run under OUT/runs")
    ap.add_argument("--seed", type=int, default=0, help="perturbation seed")
    ap.add_argument("--any-name", action="store_true",
                    help="the baseline rule: any number of a cited result grounds any number (no names, no units)")
    args = ap.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    if args.bench:
        runs += sorted(p for p in (Path(args.bench) / "runs").iterdir() if (p / "events.jsonl").is_file())
    if not runs:
        print("error: no runs given — pass run directories or --bench OUT", file=sys.stderr)
        return 2
    head = ["run (task)", "conclusions", "numbers", "false pos. numbers", "false pos. citations",
            *[f"{k} caught" for k in KINDS]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    total = ValidationCounts(perturbed={k: 0 for k in KINDS}, caught={k: 0 for k in KINDS})
    for run in runs:
        view = RunView.from_run(run)
        v = validate(view.record(), seed=args.seed, by_name=not args.any_name)
        total = total.add(v)
        task = view.started.task if view.started else "?"
        print(f"| {task} (`{run.name}`) | {v.claims} | {v.numbers} | {_rate(v.false_positive_numbers, v.numbers)} | "
              f"{v.false_positive_citations} | " + " | ".join(_rate(v.caught[k], v.perturbed[k]) for k in KINDS) + " |")
    print(f"| **all** | {total.claims} | {total.numbers} | {_rate(total.false_positive_numbers, total.numbers)} | "
          f"{total.false_positive_citations} | "
          + " | ".join(_rate(total.caught[k], total.perturbed[k]) for k in KINDS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
