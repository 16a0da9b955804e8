"""The `v4c` command. Each command group lives in its own module and imports the heavy
packages (torch, triton) only inside the command that needs them, so the CLI starts fast.

Errors a user can fix (`V4CError`) are printed as their message, without a traceback, and
the process exits with the error's code (2); usage errors exit 2 as well (click's rule), and
so does a path the system refuses wherever it is first touched (a name longer than the
file system allows, a folder one may not read), said as the path and the system's reason.
Ctrl-C ends a command with one line and exit code 130, as a shell expects."""

from __future__ import annotations

import sys

import typer

from v4c import __version__
from v4c.cli.bench import bench_command
from v4c.cli.cache import cache_app
from v4c.cli.checkpoint import checkpoint_app
from v4c.cli.compile import compile_command
from v4c.cli.chat import chat_command
from v4c.cli.help import tidy
from v4c.cli.run import run_command
from v4c.cli.serve import serve_command
from v4c.cli.spec import spec_app
from v4c.errors import V4CError

app = typer.Typer(
    name="v4c",
    help="A declarative graph compiler and runtime for DeepSeek-V4.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(spec_app, name="spec")
app.add_typer(checkpoint_app, name="checkpoint")
app.add_typer(cache_app, name="cache")
app.command("compile")(compile_command)
app.command("run")(run_command)
app.command("chat")(chat_command)
app.command("bench")(bench_command)
app.command("serve")(serve_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"v4c {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """A declarative graph compiler and runtime for DeepSeek-V4."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the app and always ends in SystemExit."""
    try:
        tidy(typer.main.get_command(app))(args=argv, prog_name="v4c")
    except V4CError as err:
        for line in str(err).splitlines() or [type(err).__name__]:
            typer.echo(f"error: {line}", err=True)
        sys.exit(err.exit_code)
    except OSError as err:  # a path the system refuses (a name too long, no permission)
        if err.filename is None:  # not about a path: a fault, shown with its traceback
            raise
        typer.echo(f"error: {err.filename}: {err.strerror or err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("\ninterrupted", err=True)
        sys.exit(130)
