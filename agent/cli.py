"""The ``interp-agent`` command line (typer + rich).

Conventions, shared by every command:

- ``--json`` (global, before the command) makes commands print one JSON document instead of tables.
- Every error a user can cause prints ONE red line ``error: <what> — <how to fix>`` and exits with code 2:
  project errors (:class:`tools.errors.InterpAgentError`, :class:`sandbox.errors.SandboxError`), usage
  errors (a bad flag, a choice not offered, ``--prompts 0``), and invalid values caught by the pydantic
  models behind the commands. A multi-line message (a kernel's traceback) keeps its first line; ``--debug``
  prints the rest and the traceback.
- Any other exception is a bug: one line and exit 1, with the traceback only under ``--debug``.
- Runs live under ``$INTERP_AGENT_HOME`` (default ``~/.interp-agent``); commands that write take ``--out``.

Commands live in ``agent/commands/*.py`` (each module's ``register(app)`` adds its commands); what they
print with is :mod:`agent.commands.output`.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape
from typer._click import exceptions as click_exc  # typer vendors click; its errors live here

from agent import __version__
from agent.commands import demo, investigate, report, tasks, zoo
from agent.commands import eval as eval_commands
from agent.commands.output import STATE, err_console, error_line
from sandbox.errors import SandboxError
from tools.errors import InterpAgentError

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
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and full error texts.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """An autonomous interpretability research agent."""
    STATE.json = json_
    STATE.debug = debug


for _module in (demo, report, investigate, eval_commands, tasks, zoo):
    _module.register(app)


def validation_line(e: ValidationError) -> str:
    """A pydantic validation error as one line: the first problem, with where.

    >>> from agent.config import RunConfig
    >>> try:
    ...     RunConfig(question="q", n_prompts=0)
    ... except ValidationError as e:
    ...     print(validation_line(e))
    invalid n_prompts: Input should be greater than or equal to 2 (got 0) — see the command's --help
    """
    err = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or e.title
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"invalid {where}: {err['msg']} (got {err.get('input')!r}){more} — see the command's --help"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns (and exits with) the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    STATE.debug = "--debug" in args
    code = 0
    try:
        rv = app(args=args, prog_name="interp-agent", standalone_mode=False)
        if isinstance(rv, int):  # click returns (not raises) typer.Exit's code when standalone_mode=False
            code = rv
    except click_exc.NoArgsIsHelpError:  # `interp-agent` alone: typer has printed the help
        code = 0
    except click_exc.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "interp-agent"
        msg = " ".join(e.format_message().split())
        err_console.print(f"[red]error:[/] {escape(msg)} — see '{cmd} --help'", highlight=False)
        code = 2
    except typer.Exit as e:
        code = e.exit_code
    except typer.Abort:
        err_console.print("[red]error:[/] aborted")
        code = 130
    except (InterpAgentError, SandboxError, ValidationError) as e:
        line = validation_line(e) if isinstance(e, ValidationError) else error_line(e)
        err_console.print(f"[red]error:[/] {escape(line)}", highlight=False)
        if STATE.debug:
            traceback.print_exc()
        code = 2
    except KeyboardInterrupt:
        err_console.print("[red]error:[/] interrupted")
        code = 130
    except Exception as e:  # a bug: say so, keep the traceback for --debug
        first = (str(e).splitlines() or [""])[0]
        err_console.print(
            f"[red]error:[/] unexpected {type(e).__name__}: {escape(first)} — "
            "rerun with --debug for the traceback and report it", highlight=False)
        if STATE.debug:
            traceback.print_exc()
        code = 1
    if argv is None:
        sys.exit(code)
    return code
