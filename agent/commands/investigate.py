"""``interp-agent investigate`` / ``resume`` / ``status``: run, continue and inspect investigations.

``investigate`` shows a live view (components done/pending, the current hypothesis, steps, tool calls,
tokens, cost) and prints where the report is; ``resume RUN`` continues a run killed at any point, paused
by an API failure, or (with a larger budget option) stopped by a budget; ``status RUN`` is derived from
the run's log only. Under ``--json`` each prints one JSON document.

Exit codes of ``investigate`` / ``resume``: 0 when the run completed or stopped on a budget (a line on
stderr says which budget and how to continue), 3 when it paused (the LLM API failed after its retries: one
line on stderr says why and that ``resume`` continues it), 1 when it could not go on (``error``), 2 for bad
input (as every command).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agent.config import DType, Planner, SandboxKind


class ProgressView:
    """The live progress view: a rich renderable updated from the loop's ``on_progress`` callbacks."""

    def __init__(self) -> None:
        self.components: list[str] = []
        self.done: dict[str, str] = {}
        self.current: str | None = None
        self.hypothesis: str | None = None
        self.phase = "starting"
        self.detail = ""
        """What the phase is doing now (e.g. ``exact check 24/48`` while localising)."""
        self.steps = 0
        self.tool_calls = 0
        self.tokens = 0
        self.usd = 0.0
        self.live: Live | None = None

    def update(self, info: dict[str, Any]) -> None:
        phase = info.get("phase")
        if phase and phase != self.phase:
            self.detail = ""
        self.phase = phase or self.phase
        if info.get("detail"):
            self.detail = str(info["detail"])
        if phase == "component":
            self.current = info.get("component")
            if info.get("components"):
                self.components = list(info["components"])
            if self.current and self.current not in self.components:
                self.components.append(self.current)
        elif phase in ("step", "design"):
            self.steps = info.get("steps", self.steps)
            self.tool_calls = info.get("tool_calls", self.tool_calls)
            self.tokens = info.get("tokens", self.tokens)
            self.usd = info.get("usd", self.usd)
            if info.get("hypothesis"):
                self.hypothesis = info["hypothesis"]
        elif phase == "component_done":
            self.done[info["component"]] = "done"
        elif phase == "done":
            self.current = None
        if self.live is not None:
            self.live.update(self.render())

    def render(self) -> Group:
        title = f"investigation — {self.phase}" + (f": {self.detail}" if self.detail else "")
        t = Table(title=title, show_header=True, header_style="bold")
        t.add_column("component")
        t.add_column("state")
        for c in self.components:
            t.add_row(c, "done" if c in self.done else ("[yellow]investigating" if c == self.current else "pending"))
        foot = Text(f"steps {self.steps} · tool calls {self.tool_calls} · tokens {self.tokens} · ${self.usd:.4f}")
        parts: list[Any] = [t, foot]
        if self.hypothesis:
            parts.append(Text(f"current hypothesis: {self.hypothesis}", style="italic"))
        return Group(*parts)


def run_with_view(fn, **kwargs) -> Any:
    """Call ``fn(..., on_progress=view.update)`` inside a live view (plain when ``--json`` or no tty)."""
    from agent.commands.output import STATE, console

    view = ProgressView()
    if STATE.json or not console.is_terminal:
        return fn(on_progress=None, **kwargs)
    with Live(view.render(), console=console, refresh_per_second=4, transient=False) as live:
        view.live = live
        return fn(on_progress=view.update, **kwargs)


EXIT_PAUSED = 3
"""Exit code of a run that paused (``resume`` continues it)."""
EXIT_ERROR = 1
"""Exit code of a run that ended in ``error``."""


def print_outcome(out: Any) -> None:
    """The end of a run: conclusions, clusters, where the report is (JSON under ``--json``); then, for a run
    that did not complete, one line on stderr saying why and what continues it, and the exit code."""
    from agent.commands.output import STATE, emit

    if STATE.json:
        emit(out.model_dump())
    else:
        _print_tables(out)
    _finish_line(out)


def _finish_line(out: Any) -> None:
    from rich.markup import escape

    from agent.commands.output import err_console

    why = " ".join(str(out.reason or "").split())
    if out.status == "interrupted":
        err_console.print(f"[red]paused:[/] {escape(why or 'the run stopped')} — `interp-agent resume "
                          f"{escape(out.run_dir)}` continues it", highlight=False)
        raise typer.Exit(EXIT_PAUSED)
    if out.status == "error":
        err_console.print(f"[red]error:[/] the run could not go on: {escape(why or 'see its log')} — "
                          f"the report and `interp-agent status {escape(out.run_dir)}` show what it did",
                          highlight=False)
        raise typer.Exit(EXIT_ERROR)
    if out.status == "budget":
        err_console.print(f"[yellow]budget:[/] {escape(why or 'a budget limit stopped the run')} — `interp-agent "
                          f"resume {escape(out.run_dir)} --budget-usd X` (or another larger budget option) continues "
                          "it", highlight=False)


def _print_tables(out: Any) -> None:
    from agent.commands.output import console

    t = Table(title=f"run {out.run_id}: {out.status}")
    t.add_column("component")
    t.add_column("role")
    t.add_column("conf.")
    t.add_column("explanation", overflow="fold")
    for c, v in out.conclusions.items():
        t.add_row(c, v["role"], f"{v['confidence']:.2f}", v["explanation"][:160])
    console.print(t)
    for cl in out.clusters:
        console.print(f"cluster [bold]{cl['name']}[/]: {', '.join(cl['components'])}")
    console.print(f"report: {out.report}")
    console.print(f"run dir: {out.run_dir}")


def register(app: typer.Typer) -> None:
    @app.command()
    def investigate(
        question: Annotated[str, typer.Argument(help="The research question, in plain language.")],
        model: Annotated[str | None, typer.Option("--model", help="Zoo name, HF id or local path (default: the task's zoo model).")] = None,
        task: Annotated[str | None, typer.Option("--task", help="Task name or spec file (default: framed from the question).")] = None,
        design_task: Annotated[bool, typer.Option("--design-task", help="Let Claude design the task (propose specs, check them on the model) even if one matches; it does anyway when none does.")] = False,
        design_steps: Annotated[int, typer.Option("--design-steps", min=1, help="Planner turns the task design may take.")] = 8,
        circuit: Annotated[str | None, typer.Option("--circuit", help="Components to investigate, e.g. L9H9,L9H6 (default: localise).")] = None,
        planner: Annotated[Planner | None, typer.Option("--planner", help="Who plans (default: claude if ANTHROPIC_API_KEY is set, else offline).")] = None,
        replay_from: Annotated[str | None, typer.Option("--replay-from", help="Run whose LLM turns the replay planner feeds back.")] = None,
        llm_model: Annotated[str | None, typer.Option("--llm-model", help="Claude model id for --planner claude.")] = None,
        llm_max_tokens: Annotated[int, typer.Option("--llm-max-tokens", min=1, help="Output tokens per Claude call, thinking included (Claude 5 models think adaptively: leave room).")] = 16000,
        stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Stream Claude's responses (needed for a very large --llm-max-tokens).")] = False,
        budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="Stop spending LLM money at this many US dollars.")] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="Planner steps per component (default 12).")] = None,
        max_tool_calls: Annotated[int | None, typer.Option("--max-tool-calls", help="Tool calls over the run.")] = None,
        max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="LLM tokens over the run.")] = None,
        max_wall_s: Annotated[float | None, typer.Option("--max-wall-s", help="Active seconds over the run.")] = None,
        prompts: Annotated[int, typer.Option("--prompts", min=2, help="Prompts in the main and in the held-out batch.")] = 32,
        out: Annotated[str | None, typer.Option("--out", help="Directory for runs (default: $INTERP_AGENT_HOME/runs).")] = None,
        sandbox: Annotated[SandboxKind, typer.Option("--sandbox", help="Where the kernel runs (docker: a container; README \"Docker backend\").")] = SandboxKind.LOCAL,
        gpus: Annotated[str | None, typer.Option("--gpus", help="GPUs for the kernel: all, a count, or ids 0,1 (docker: a device request).")] = None,
        unsafe_no_isolation: Annotated[bool, typer.Option("--unsafe-no-isolation", help="Run the kernel without isolation when none is available (logged).")] = False,
        seed: Annotated[int, typer.Option("--seed", help="Seed for prompts and resampling.")] = 0,
        threshold: Annotated[float, typer.Option("--threshold", min=0.0, help="Localisation keeps |effect| >= this fraction of the clean-corrupt gap.")] = 0.1,
        max_components: Annotated[int, typer.Option("--max-components", min=1, help="Localisation keeps at most this many components.")] = 8,
        grounding_check: Annotated[bool, typer.Option("--grounding-check/--no-grounding-check", help="Send a conclusion whose numbers, citations or tested hypothesis fail the grounding check back to the planner once (it is scored either way).")] = True,
        cell_timeout: Annotated[float | None, typer.Option("--cell-timeout", min=1.0, help="Wall-clock seconds one kernel cell may run (default: 120 for zoo-sized models, 300 up to 1B parameters, else 600; long sweeps are split to fit).")] = None,
        threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch threads in the kernel (default: 1 for zoo-sized models, else every idle core).")] = None,
        device: Annotated[str | None, typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda when this machine has one).")] = None,
        dtype: Annotated[DType, typer.Option("--dtype", help="Dtype the model is loaded in.")] = DType.FLOAT32,
    ) -> None:
        """Investigate a question about a model: frame, localise, explain each component, cluster, report."""
        from agent.budget import parse_budget
        from agent.config import RunConfig, default_planner
        from agent.run import start_run
        from tools.components import parse_components

        budget = parse_budget(max_steps=max_steps if max_steps is not None else 12, max_usd=budget_usd,
                              max_tool_calls=max_tool_calls, max_tokens=max_tokens, max_wall_s=max_wall_s)
        comps = [str(c) for c in parse_components(circuit)] if circuit else None
        cfg = RunConfig(question=question, task=task, model=model, circuit=comps, design_task=design_task,
                        design_steps=design_steps,
                        planner=planner or (Planner.REPLAY if replay_from else default_planner()), replay_from=replay_from,
                        llm_model=llm_model, llm_max_tokens=llm_max_tokens, llm_stream=stream, budget=budget,
                        n_prompts=prompts, seed=seed, sandbox=sandbox,
                        gpus=gpus, unsafe_no_isolation=unsafe_no_isolation, out=out, threshold=threshold,
                        max_components=max_components, grounding_check=grounding_check,
                        cell_timeout_s=cell_timeout, kernel_threads=threads, device=device, dtype=dtype)
        print_outcome(run_with_view(start_run, cfg=cfg))

    @app.command()
    def resume(
        run: Annotated[str, typer.Argument(help="Run directory or run id.")],
        out: Annotated[str | None, typer.Option("--out", help="Directory holding runs (when RUN is an id).")] = None,
        budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="New USD limit over the whole run (what it spent counts).")] = None,
        max_steps: Annotated[int | None, typer.Option("--max-steps", help="New planner steps per component.")] = None,
        max_tool_calls: Annotated[int | None, typer.Option("--max-tool-calls", help="New limit of tool calls over the run.")] = None,
        max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="New limit of LLM tokens over the run.")] = None,
        max_wall_s: Annotated[float | None, typer.Option("--max-wall-s", help="New limit of active seconds over the run.")] = None,
    ) -> None:
        """Continue a run: killed, paused by an API failure, or (with a larger budget) stopped by a budget."""
        from agent.budget import parse_budget
        from agent.run import resume_run

        given = {"max_usd": budget_usd, "max_steps": max_steps, "max_tool_calls": max_tool_calls,
                 "max_tokens": max_tokens, "max_wall_s": max_wall_s}
        parse_budget(**given)  # one-line errors for nonsense values
        budget = {k: v for k, v in given.items() if v is not None}
        print_outcome(run_with_view(resume_run, run=run, out=out, budget=budget))

    @app.command()
    def status(
        run: Annotated[str, typer.Argument(help="Run directory or run id.")],
        out: Annotated[str | None, typer.Option("--out", help="Directory holding runs (when RUN is an id).")] = None,
    ) -> None:
        """Where a run stands, derived from its log only."""
        from agent.commands.output import STATE, console, emit
        from agent.run import run_status

        st = run_status(run, out)
        if STATE.json:
            emit(st)
            return
        t = Table(title=f"run {st['run_id']} — {st['state']}")
        t.add_column("component")
        t.add_column("role / state")
        for c, r in st["components"].items():
            t.add_row(c, r if c != st["current"] else f"[yellow]{r} (current)")
        console.print(f"question: {st['question']}\ntask: {st['task']} · model: {st['model']} · "
                      f"planner: {st['planner']}")
        d = st.get("design")
        if d:
            done = (f"task {d['task']} accepted ({d['file']})" if d["state"] == "accepted" else
                    f"failed: {d['reason']}" if d["state"] == "failed" else "in progress")
            console.print(f"task design: {done}; {d['proposals']} proposal(s)", highlight=False)
        if st.get("reason"):
            console.print(f"paused: {st['reason']}")
        console.print(t)
        console.print(f"{st['done']} done, {len(st['pending'])} pending · {st['hypotheses']} hypotheses · "
                      f"{st['tool_calls']} tool calls · {st['llm_calls']} LLM calls · {st['tokens']} tokens · "
                      f"${st['usd']:.4f}")
        if st["last_hypothesis"]:
            console.print(f"last hypothesis: {st['last_hypothesis']}")
        for n, cs in st["clusters"].items():
            console.print(f"cluster {n}: {', '.join(cs)}")
        if st["summary"]:
            console.print(st["summary"])
        console.print(f"run dir: {Path(st['run_dir'])}")
