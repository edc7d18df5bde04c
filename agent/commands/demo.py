"""``interp-agent demo``: a full offline investigation of the toy-IOI zoo model (what `make demo` runs).

The offline planner frames the IOI question, localises the circuit with an exact patching sweep,
investigates each component (ablation, patching, attention in task terms, DLA, head scores; hypotheses
tested on held-out prompts), clusters the components by role and writes ``report.md``. The command
prints each component's role in a sentence and where the report is.
"""

from __future__ import annotations

from typing import Annotated

import typer

DEMO_QUESTION = "Which heads move the indirect object's name in IOI, and what does each component do?"


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Annotated[str | None, typer.Option("--out", help="Directory for runs (default: $INTERP_AGENT_HOME/runs).")] = None,
        prompts: Annotated[int, typer.Option("--prompts", min=2, help="Prompts in the main and in the held-out batch.")] = 32,
        unsafe_no_isolation: Annotated[bool, typer.Option("--unsafe-no-isolation", help="Run the kernel without isolation when none is available (logged).")] = False,
    ) -> None:
        """Run a full offline investigation of the toy-IOI zoo model and summarise each component's role."""
        from agent.budget import Budget
        from agent.commands.investigate import run_with_view
        from agent.commands.output import STATE, console, emit
        from agent.config import Planner, RunConfig
        from agent.run import start_run

        cfg = RunConfig(question=DEMO_QUESTION, task="toy-ioi", model="toy-ioi", planner=Planner.OFFLINE,
                        budget=Budget(max_steps=6), n_prompts=prompts, out=out,
                        unsafe_no_isolation=unsafe_no_isolation)
        res = run_with_view(start_run, cfg=cfg)
        if STATE.json:
            emit(res.model_dump())
            return
        console.print(f"\n[bold]toy-IOI investigation ({res.status})[/] — {len(res.conclusions)} components")
        for comp, c in res.conclusions.items():
            console.print(f"  [bold]{comp}[/] — {c['role']} (confidence {c['confidence']:.2f}): "
                          f"{c['explanation'].split('. ')[0]}.", highlight=False)
        for cl in res.clusters:
            console.print(f"  cluster [bold]{cl['name']}[/]: {', '.join(cl['components'])}", highlight=False)
        console.print(f"\nreport: {res.report}\nlog: {res.run_dir}/events.jsonl", highlight=False)
