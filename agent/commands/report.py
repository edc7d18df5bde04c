"""``interp-agent replay RUN [--verify] [--planner-replay]`` and ``interp-agent report RUN [--md] [--html]
[--notebook]``: check a logged run, and turn it into a story (Markdown / HTML) and code (notebook).

``RUN`` is a run directory, or a run id under ``--out`` / ``$INTERP_AGENT_HOME/runs``, or ``last``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from agent.config import SandboxKind
from agent.paths import resolve_run


def _ratio(x: float | None) -> str:
    return f"{x:.2f}×" if x is not None else "unknown (the log has no wall time)"


def register(app: typer.Typer) -> None:
    @app.command()
    def replay(
        run: Annotated[str, typer.Argument(help="Run directory, run id, or 'last'.")],
        verify: Annotated[bool, typer.Option("--verify", help="Re-execute every logged cell and compare numbers.")] = False,
        planner_replay: Annotated[bool, typer.Option(
            "--planner-replay", help="Re-run the graph on the logged LLM turns; compare calls and conclusions.")] = False,
        out: Annotated[str | None, typer.Option("--out", help="Runs folder (default $INTERP_AGENT_HOME/runs).")] = None,
        unsafe_no_isolation: Annotated[bool, typer.Option(
            "--unsafe-no-isolation", help="Run the cells in an unisolated kernel (only if the sandbox cannot isolate).")] = False,
        sandbox: Annotated[SandboxKind | None, typer.Option(
            "--sandbox", help="Backend that re-executes the cells (default: the run's).")] = None,
    ) -> None:
        """Replay a logged run: --verify re-computes every number; --planner-replay re-runs the agent."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.table import Table

        from agent import replay as rp
        from agent.commands.output import STATE, console, emit, err_console

        run_dir = resolve_run(run, out)
        if not verify and not planner_replay:
            verify = True
        failed = False
        result: dict = {"run": str(run_dir)}
        if verify:
            progress = None if STATE.json else Progress(
                TextColumn("verifying cells"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"), console=err_console, transient=False)
            task_id = None

            def on_cell(i: int, n: int, cell) -> None:
                if progress is not None and task_id is not None:
                    progress.update(task_id, completed=i, total=n, description=f"#{cell.seq} {cell.call}")

            if progress is not None:
                with progress:
                    task_id = progress.add_task("", total=None)
                    rep = rp.verify(run_dir, on_cell=on_cell, unsafe_no_isolation=unsafe_no_isolation or None,
                                    backend=sandbox)
            else:
                rep = rp.verify(run_dir, unsafe_no_isolation=unsafe_no_isolation or None, backend=sandbox)
            result["verify"] = {**rep.model_dump(), "ok": rep.ok, "ratio": rep.ratio}
            failed |= not rep.ok
            if not STATE.json:
                if rep.mismatches:
                    t = Table(title=f"{len(rep.mismatches)} mismatches (rtol {rep.rtol:g}, atol {rep.atol:g})")
                    for col in ("event seq", "call", "field"):
                        t.add_column(col, no_wrap=True)
                    for col in ("logged", "now"):
                        t.add_column(col, overflow="fold")
                    for m in rep.mismatches:
                        t.add_row(str(m.seq), m.call, m.path, m.logged, m.now)
                    console.print(t)
                verdict = "[green]verified[/]" if rep.ok else "[red]FAILED[/]"
                console.print(f"{verdict}: {rep.cells} cells re-executed, {len(rep.mismatches)} mismatches; "
                              f"verification {rep.verify_s:.1f} s (setup {rep.setup_s:.1f} s) vs original run "
                              f"{rep.original_wall_s or 0:.1f} s → ratio {_ratio(rep.ratio)}")
        if planner_replay:
            pr = rp.planner_replay(run_dir, out_dir=out)
            result["planner_replay"] = {**pr.model_dump(), "ok": pr.ok, "ratio": pr.ratio}
            failed |= not pr.ok
            if not STATE.json:
                for line in pr.differences:
                    console.print(f"[red]differs:[/] {line}", highlight=False)
                verdict = "[green]same calls and conclusions[/]" if pr.ok else "[red]DIFFERENT[/]"
                console.print(f"planner replay: {verdict} ({pr.calls_logged} logged vs {pr.calls_now} replayed tool "
                              f"calls); new run {pr.new_run_dir}; {pr.replay_s:.1f} s vs original "
                              f"{pr.original_wall_s or 0:.1f} s → ratio {_ratio(pr.ratio)}")
        if STATE.json:
            emit(result)
        if failed:
            raise typer.Exit(1)

    @app.command()
    def report(
        run: Annotated[str, typer.Argument(help="Run directory, run id, or 'last'.")],
        md: Annotated[bool, typer.Option("--md", help="Write report.md.")] = False,
        html: Annotated[bool, typer.Option("--html", help="Write report.html (one self-contained file).")] = False,
        notebook: Annotated[bool, typer.Option("--notebook", help="Write report.ipynb (re-runnable).")] = False,
        execute: Annotated[bool, typer.Option(
            "--execute", help="Also run the notebook top to bottom in a fresh sandbox (isolated; refuses without isolation) to check it.")] = False,
        attention: Annotated[bool, typer.Option(
            "--attention", help="Re-compute the concluded heads' attention patterns in a sandbox for the figures.")] = False,
        out: Annotated[str | None, typer.Option("--out", help="Runs folder (default $INTERP_AGENT_HOME/runs).")] = None,
    ) -> None:
        """Write the run's reports (all three when no format flag is given) beside its log."""
        from agent.commands.output import emit
        from agent.replay.attention import recompute_attention
        from agent.report import build_summary, execute_notebook, write_reports

        run_dir = resolve_run(run, out)
        if not (md or html or notebook):
            md = html = notebook = True
        summary = build_summary(run_dir, figures=md or html)
        if attention and (md or html):
            recompute_attention(summary)
        paths = write_reports(run_dir, md=md, html=html, notebook=notebook or execute, summary=summary)
        executed = None
        if execute:
            nb_path = next(p for p in paths if p.suffix == ".ipynb")
            execute_notebook(nb_path, kernel=summary.kernel)
            executed = str(nb_path)
        emit({"run": str(run_dir), "written": [str(p) for p in paths], "notebook_executed": executed},
             table="\n".join([f"wrote {p}" for p in paths]
                             + ([f"notebook ran top to bottom without errors: {executed}"] if executed else [])))
