"""The ``interp-agent`` command line (typer + rich).

Conventions, shared by every command:

- ``--json`` (global, before the command) makes commands print one JSON document instead of tables.
- Project errors (:class:`tools.errors.InterpAgentError`, :class:`sandbox.errors.SandboxError`) print
  one red line ``error: <what> — <how to fix>`` and exit with code 2; usage errors (a bad flag) too.
- Any other exception is a bug: one line and exit 1, with the traceback only under ``--debug``.
- Runs live under ``$INTERP_AGENT_HOME`` (default ``~/.interp-agent``); commands that write take ``--out``.

Commands live in ``agent/commands/*.py``; each module's ``register(app)`` adds its commands, so this
file stays a thin shell.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer._click import exceptions as click_exc  # typer vendors click; its errors live here

from agent import __version__

# One line per command module; each defines ``register(app: typer.Typer) -> None``.
COMMAND_MODULES: list[str] = [
    "agent.commands.demo",
    "agent.commands.report",
    "agent.commands.investigate",
    "agent.commands.eval",
    "agent.commands.tasks",
    "agent.commands.zoo",
]

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the width


@dataclass
class CLIState:
    """Global flags, set by the root callback and read by commands."""

    json: bool = False
    debug: bool = False


STATE = CLIState()

app = typer.Typer(
    name="interp-agent",
    help="An autonomous interpretability research agent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"interp-agent {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    json_: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """An autonomous interpretability research agent."""
    STATE.json = json_
    STATE.debug = debug


def emit(data: Any, table: Any = None) -> None:
    """Print ``data`` as JSON under ``--json``, else ``table`` (a rich renderable) or ``data``."""
    if STATE.json:
        typer.echo(json.dumps(data, indent=2, default=str))
    elif table is not None:
        console.print(table)
    else:
        console.print(data)


def _project_errors() -> tuple[type[BaseException], ...]:
    from tools.errors import InterpAgentError

    errs: list[type[BaseException]] = [InterpAgentError]
    try:
        from sandbox.errors import SandboxError

        errs.append(SandboxError)
    except ImportError:
        pass
    return tuple(errs)


def _register_all() -> None:
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns (and exits with) the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    STATE.debug = "--debug" in args
    project_errors = _project_errors()
    code = 0
    try:
        rv = app(args=args, prog_name="interp-agent", standalone_mode=False)
        if isinstance(rv, int):  # click returns (not raises) typer.Exit's code when standalone_mode=False
            code = rv
    except click_exc.NoArgsIsHelpError:  # `interp-agent` alone: typer has printed the help
        code = 0
    except click_exc.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "interp-agent"
        err_console.print(f"[red]error:[/] {escape(e.format_message())} — see '{cmd} --help'", highlight=False)
        code = 2
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        err_console.print("[red]error:[/] aborted")
        code = 130
    except project_errors as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        if STATE.debug:
            traceback.print_exc()
        code = 2
    except KeyboardInterrupt:
        err_console.print("[red]error:[/] interrupted")
        code = 130
    except Exception as e:  # a bug: say so, keep the traceback for --debug
        err_console.print(
            f"[red]error:[/] unexpected {type(e).__name__}: {escape(str(e))} — "
            "rerun with --debug for the traceback and report it", highlight=False)
        if STATE.debug:
            traceback.print_exc()
        code = 1
    if argv is None:
        sys.exit(code)
    return code
