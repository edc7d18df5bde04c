"""``interp-agent eval RUN`` (score one run, append an evaluation event) and ``interp-agent bench``.

``bench`` runs investigations over tasks × planners × seeds (× head-permuted names with
``--permute-heads SEED``) as Ray tasks, writes ``results.jsonl`` as each finishes (rerunning the same
command resumes), and prints the Markdown table it also writes to ``OUT/results.md`` and CSV.
"""

from __future__ import annotations

from typing import Annotated

import typer

from agent.bench.models import ExecutorKind

DEFAULT_TASKS = "toy-ioi,toy-induction,toy-greater-than,toy-ioi-6l"


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _show_interchange(details: dict, run_dir) -> None:
    """Write the I_sym heat map as ``interchange.png``; print it (text) ordered by the agent's clusters."""
    import base64

    from agent.commands.output import STATE, console
    from agent.report.interchange_figure import interchange_figure, interchange_text

    fig = interchange_figure(details)
    if fig is None:
        return
    png = run_dir / "interchange.png"
    png.write_bytes(base64.b64decode(fig.png_b64))
    if not STATE.json:
        console.print(interchange_text(details), markup=False, highlight=False)
        console.print(f"heat map (agent clusters beside reference clusters): {png}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        run: Annotated[str, typer.Argument(help="Run directory or run id.")],
        out: Annotated[str | None, typer.Option("--out", help="Runs directory to look the run id up in.")] = None,
        seed: Annotated[int | None, typer.Option("--seed", help="Prompt seed for scoring (default: the run's).")] = None,
        n_null: Annotated[int, typer.Option("--n-null", help="Random clusterings in the null distribution.")] = 200,
        judge: Annotated[bool | None, typer.Option(
            "--judge/--no-judge", help="Also judge role labels with Claude (default: when ANTHROPIC_API_KEY is set).")
        ] = None,
        no_append: Annotated[bool, typer.Option("--no-append", help="Do not write the evaluation event.")] = False,
    ) -> None:
        """Score one run: interchangeability, replication, ground truth, faithfulness, grounding, cost."""
        from rich.table import Table

        from agent.bench import default_judge, evaluate_run
        from agent.commands.output import STATE, console, emit
        from agent.paths import resolve_run

        run_dir = resolve_run(run, out)
        res = evaluate_run(run_dir, append=not no_append, seed=seed, n_null=n_null, judge=default_judge(judge))
        t = Table(title=f"evaluation of {run_dir.name}", header_style="bold")
        t.add_column("score")
        t.add_column("value", justify="right")
        for k, v in res["scores"].items():
            t.add_row(k, "–" if v is None else f"{v:.4g}")
        problems = res["details"].get("grounding", {}).get("problems", {})
        emit({"run_dir": res["run_dir"], "scores": res["scores"], "grounding_problems": problems}, t)
        if not STATE.json:
            for comp, ps in problems.items():
                for p in ps:
                    console.print(f"[yellow]ungrounded[/] {comp}: {p}", markup=True, highlight=False)
        _show_interchange(res["details"], run_dir)

    @app.command("bench")
    def bench(
        tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated task names.")] = DEFAULT_TASKS,
        planners: Annotated[str, typer.Option("--planners", help="Comma-separated: offline, claude.")] = "offline",
        seeds: Annotated[int, typer.Option("--seeds", help="Seeds per (task, planner): 0..N-1.", min=1)] = 1,
        permute_heads: Annotated[int | None, typer.Option(
            "--permute-heads", help="Also run on a head-permuted model (this seed) and report the difference.")] = None,
        ray_address: Annotated[str | None, typer.Option(
            "--ray-address", help="Existing Ray cluster address (default: start Ray on this machine).")] = None,
        executor: Annotated[ExecutorKind, typer.Option("--executor", help="ray, or inline (sequential, no Ray).")] = ExecutorKind.RAY,
        out: Annotated[str | None, typer.Option("--out", help="Results directory (default: $INTERP_AGENT_HOME/bench).")] = None,
        n_prompts: Annotated[int, typer.Option("--n-prompts", help="Prompts per batch.", min=2)] = 32,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Planner steps per component.")] = None,
        n_null: Annotated[int, typer.Option("--n-null", help="Random clusterings in each null distribution.")] = 200,
        judge: Annotated[bool | None, typer.Option(
            "--judge/--no-judge", help="Judge role labels with Claude too (default: when ANTHROPIC_API_KEY is set).")
        ] = None,
        unsafe_no_isolation: Annotated[bool, typer.Option(
            "--unsafe-no-isolation", help="Run the sandbox kernel without isolation.")] = False,
    ) -> None:
        """Benchmark planners over tasks and seeds; write results (CSV + Markdown) and print the table."""
        from agent.bench import BenchConfig, run_bench
        from agent.commands.output import STATE, console, emit
        from agent.paths import home_dir

        cfg = BenchConfig(tasks=_split(tasks), planners=_split(planners), seeds=seeds, permute_heads=permute_heads,
                          ray_address=ray_address, executor=executor, out=out or str(home_dir() / "bench"),
                          n_prompts=n_prompts, max_steps=max_steps, n_null=n_null, judge=judge,
                          unsafe_no_isolation=unsafe_no_isolation)
        res = run_bench(cfg, progress=not STATE.json)
        if STATE.json:
            emit(res.model_dump())
            return
        for note in res.skipped:
            console.print(f"[yellow]note:[/] {note}")
        if res.reused:
            console.print(f"{len(res.reused)} finished cell(s) reused from {res.out}/results.jsonl")
        for err in res.errors:
            console.print(f"[red]failed:[/] {err}")
        console.print(res.markdown, markup=False, highlight=False, soft_wrap=True)
        console.print(f"results: {res.out}/results.md, {res.out}/results.csv, {res.out}/results.jsonl")
