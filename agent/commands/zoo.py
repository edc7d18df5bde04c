"""``interp-agent zoo list``: the offline model zoo (trained and planted models)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    zoo_app = typer.Typer(help="The offline model zoo (trained and planted small models).", no_args_is_help=True)
    app.add_typer(zoo_app, name="zoo")

    @zoo_app.command("list")
    def list_() -> None:
        """List zoo models: name, kind, architecture, parameters, accuracy, training time, reference source."""
        from rich.table import Table

        from agent.commands.output import emit
        from evals.zoo import list_zoo

        entries = list_zoo()
        t = Table(title="model zoo (evals/zoo/models)", header_style="bold")
        for col, just in (("name", "left"), ("kind", "left"), ("architecture", "left"), ("params", "right"),
                          ("accuracy", "right"), ("train time", "right"), ("task", "left"), ("reference", "left")):
            t.add_column(col, justify=just, no_wrap=col == "name")
        for e in entries:
            arch = f"{e.architecture} {e.n_layers}L×{e.n_heads}H d{e.d_model}"
            t.add_row(e.name, e.kind, arch, f"{e.params:,}", f"{100 * e.accuracy:.1f}%",
                      "–" if e.train_time_s is None else f"{e.train_time_s:.0f} s" + (
                          f" (CPU {e.extra['train_cpu_s']:.0f} s)" if "train_cpu_s" in e.extra else ""), e.task, e.reference_source)
        emit([e.model_dump(mode="json") | {"path": str(e.path)} for e in entries], t)
