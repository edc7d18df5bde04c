"""``interp-agent tasks list`` and ``interp-agent tasks show NAME``: the built-in task specs."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    tasks_app = typer.Typer(help="Task specs: prompts, metric and reference circuits.", no_args_is_help=True)
    app.add_typer(tasks_app, name="tasks")

    @tasks_app.command("list")
    def list_() -> None:
        """List the task specs: name, model, metric, reference size and sources."""
        from rich.table import Table

        from agent.cli import emit
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

        from agent.cli import emit
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
