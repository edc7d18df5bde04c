"""``interp-agent tasks list|show|check|new``: the task specs, whether one is usable on a model, and starters.

``check`` and ``new`` are thin wrappers: the verdict is :func:`evals.tasks.check.check_task` and the
starter text :func:`evals.tasks.starters.starter`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from tools.errors import InterpAgentError


class TaskUnusableError(InterpAgentError):
    """``tasks check`` found the task unusable on the model (the reasons are in the message)."""


def register(app: typer.Typer) -> None:
    tasks_app = typer.Typer(help="Task specs: prompts, metric and reference circuits.", no_args_is_help=True)
    app.add_typer(tasks_app, name="tasks")

    @tasks_app.command("list")
    def list_() -> None:
        """List the task specs: name, model, metric, reference size and sources."""
        from rich.table import Table

        from agent.commands.output import emit
        from evals.tasks import list_tasks

        specs = list_tasks()
        t = Table(title="tasks", header_style="bold")
        for col in ("name", "model", "metric", "roles", "reference", "source"):
            t.add_column(col, no_wrap=col == "name")
        rows = []
        for s in specs:
            sources = sorted({part.strip() for e in s.reference for part in e.source.split(";")})
            rows.append({"name": s.name, "model": s.model, "metric": s.metric, "roles": s.roles,
                         "reference_components": len(s.reference), "reference_sources": sources,
                         "description": s.description})
            t.add_row(s.name, s.model, s.metric, " ".join(s.roles), str(len(s.reference)),
                      "; ".join(sources) or "–")
        emit(rows, t)

    @tasks_app.command("show")
    def show(name: Annotated[str, typer.Argument(help="Task name (see 'tasks list') or a spec file path.")]) -> None:
        """Show one task: description, generator and its reference circuit."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        from agent.commands.output import emit
        from evals.tasks import load_task

        s = load_task(name)
        t = Table(title=f"reference circuit of {s.name}", header_style="bold")
        for col in ("component", "role", "explanation", "source"):
            t.add_column(col)
        for e in s.reference:
            t.add_row(e.component + (" (?)" if e.uncertain else ""), e.role, e.explanation, e.source)
        head = Text(f"{s.name}: {s.description}\nmodel: {s.model}   metric: {s.metric}   roles: "
                    f"{', '.join(s.roles)}   generator: {s.generator.kind}\n"
                    + ("(?) = marked uncertain by the source or by us\n" if any(e.uncertain for e in s.reference) else ""))
        body = [head, t] if s.reference else [head, Text("no reference circuit")]
        if s.sources:
            body.append(Text("sources:\n" + "\n".join(f"- {x}" for x in s.sources)))
        emit(s.model_dump(mode="json"), Group(*body))

    @tasks_app.command("check")
    def check(
        task: Annotated[str, typer.Argument(help="Task name (see 'tasks list') or a spec file path.")],
        model: Annotated[str | None, typer.Option(
            "--model", help="Zoo name, local model directory or cached hub id; default: the task's own model.")] = None,
        prompts: Annotated[int, typer.Option("--prompts", min=2, help="Prompts to draw and run.")] = 64,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the prompt draw.")] = 0,
        min_prompts: Annotated[int, typer.Option("--min-prompts", min=1,
                                                 help="Fewer distinct valid prompts than this: unusable.")] = 16,
    ) -> None:
        """Tokenise and run a task on a model: metric, gap, accuracy, flips, tokenisation warnings.

        Exits 2 with the reason when the task is unusable (gap below the noise floor, accuracy at chance,
        too few valid prompts).
        """
        from agent.commands.output import console, emit
        from evals.tasks import load_task
        from evals.tasks.check import check_task
        from evals.zoo import load_any_model

        spec = load_task(task)
        ref = model or spec.model
        with console.status(f"checking {spec.name} on {ref}", spinner="dots"):
            m = load_any_model(ref)
            result = check_task(spec, m, n=prompts, seed=seed, min_prompts=min_prompts)
        result = result.model_copy(update={"model": ref})
        emit(result.model_dump(mode="json") | {"usable": result.usable}, _check_table(result))
        if not result.usable:
            raise TaskUnusableError(f"task {spec.name} is unusable on {ref}: " + "; ".join(result.reasons),
                                    fix="change the corruption, the answers or the model (see the table above), "
                                        "or pass another --model")

    @tasks_app.command("new")
    def new(
        name: Annotated[str, typer.Argument(help="Task name (lower case, digits, - and _); the file is NAME.yaml.")],
        kind: Annotated[Literal["template", "pairs"], typer.Option(
            "--kind", help="template: slots filled per prompt; pairs: explicit prompt pairs.")] = "template",
        out: Annotated[Path | None, typer.Option("--out", help="File to write (default ./NAME.yaml).")] = None,
        model: Annotated[str, typer.Option("--model", help="The model the task is for.")] = "toy-pronoun",
        force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    ) -> None:
        """Write a commented starter spec of a generic kind (valid as written; edit it, then 'tasks check')."""
        from agent.commands.output import emit
        from evals.tasks.starters import starter

        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
            raise InterpAgentError(f"task name {name!r} is not lower-case letters, digits, - or _",
                                   fix="e.g. interp-agent tasks new my-pronoun-task")
        path = out or Path(f"{name}.yaml")
        if path.exists() and not force:
            raise InterpAgentError(f"{path} already exists", fix="pass --force to overwrite it, or --out another file")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(starter(name, kind, model=model, path=str(path)))
        emit({"path": str(path), "kind": kind, "name": name},
             f"wrote {path} ({kind} task '{name}'); next: interp-agent tasks check {path} --model {model}")


def _check_table(r: Any) -> Any:
    """One table: prompts, clean and corrupt metric, gap, accuracy, flips, tokenisation warnings, verdict."""
    from rich.table import Table

    t = Table(title=f"tasks check: {r.task} on {r.model}", header_style="bold", show_lines=False)
    t.add_column("measure", no_wrap=True)
    t.add_column("value")

    def f(x: float | None, d: int = 3) -> str:
        return "–" if x is None else f"{x:.{d}f}"

    t.add_row("prompts", f"{r.distinct_prompts} distinct of {r.prompts} ({r.seq_len} tokens each)")
    t.add_row(f"clean {r.metric}", f(r.clean))
    t.add_row(f"corrupt {r.metric}", f(r.corrupt))
    t.add_row("gap (clean − corrupt)", f"{f(r.gap)}  (SE {f(r.gap_se, 4)}; noise floor {f(r.noise_floor)})")
    t.add_row("accuracy (prefers answer)", f"{f(r.accuracy, 2)}  (chance {f(r.chance, 2)}; top-1 {f(r.top1, 2)})")
    t.add_row("corrupt prompts that flip", f(r.flips, 2))
    for ex in r.examples[:1]:
        t.add_row("example", f"{ex.clean!r} → {ex.answer!r} (not {ex.wrong!r}); corrupt {ex.corrupt!r}")
    if not r.issues:
        t.add_row("tokenisation warnings", "none")
    for i in r.issues:
        t.add_row("tokenisation warning", f"{i.problem} ({i.count} of {i.draws}) — {i.fix}")
    t.add_row("verdict", "[green]usable[/]" if r.usable else "[red]unusable[/]: " + "; ".join(r.reasons))
    return t
