from __future__ import annotations

import subprocess
import sys

from agent import __version__
from agent.cli import main


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"interp-agent {__version__}"


def test_bad_flag_is_one_line_exit_2(capsys) -> None:
    assert main(["--no-such-flag"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--no-such-flag" in err and "--help" in err
    assert len(err.splitlines()) == 1


def test_project_error_is_one_line_exit_2(capsys, monkeypatch) -> None:
    import typer

    from agent import cli
    from tools.errors import ComponentError

    sub = typer.Typer()

    @sub.command("boom")
    def boom() -> None:
        raise ComponentError("cannot parse component 'L9X9'", fix="use L{layer}H{head}")

    @sub.command("other")
    def other() -> None:
        pass

    monkeypatch.setattr(cli, "app", sub)
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: cannot parse component 'L9X9' — use L{layer}H{head}"


def test_unexpected_error_hides_traceback_without_debug(capsys, monkeypatch) -> None:
    import typer

    from agent import cli

    sub = typer.Typer()

    @sub.callback()
    def root(debug: bool = typer.Option(False, "--debug")) -> None:
        pass

    @sub.command("crash")
    def crash() -> None:
        raise RuntimeError("bug here")

    @sub.command("other")
    def other() -> None:
        pass

    monkeypatch.setattr(cli, "app", sub)
    assert cli.main(["crash"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--debug" in err
    assert cli.main(["--debug", "crash"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_console_script_installed() -> None:
    exe = subprocess.run([sys.executable, "-m", "agent", "--version"], capture_output=True, text=True, timeout=60)
    assert exe.returncode == 0 and __version__ in exe.stdout


def test_long_project_error_stays_one_line(capsys, monkeypatch) -> None:
    import typer

    from agent import cli
    from tools.errors import InterpAgentError

    sub = typer.Typer()
    what = "a long message " * 12

    @sub.command("boom")
    def boom() -> None:
        raise InterpAgentError(what.strip(), fix="do the thing " * 6)

    @sub.command("other")
    def other() -> None:
        pass

    monkeypatch.setattr(cli, "app", sub)
    assert cli.main(["boom"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err) > 200 and len(err.splitlines()) == 1
