"""The Typer app of `gnncompress`: one-line errors and exit codes, usage lines,
the resume line after Ctrl-C, the end-of-run summary, and the API imported
on first use (--help imports no torch)."""
from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from gnncompress import __version__
from gnncompress.cli.process import resume_collector
from gnncompress.core.errors import (
    GnnCompressError,
    RunInterrupted,
    out_of_memory,
)
from gnncompress.core.timing import announce_phases


class _LazyApi:
    """``gnncompress.api``, imported on first use: ``--help`` and usage
    errors answer without importing torch (issue 23). A plain object, not a
    lazy module in ``sys.modules``: code that walks ``sys.modules`` while
    torch_geometric imports would load the API in the middle of that
    import (a circular import)."""

    def __getattr__(self, name: str) -> Any:
        from gnncompress import api as module
        return getattr(module, name)


api = _LazyApi()


# emoji=False: an error quoting a value such as 10:abc:5 prints it as given.
err_console = Console(stderr=True, highlight=False, soft_wrap=True,
                      emoji=False)


GATE_EXIT_CODE = 3  # a failed gate, distinct from 1 (bad input)


INTERRUPTED_EXIT_CODE = 130  # Ctrl-C, as shells report SIGINT


# The arguments of this invocation (after the program name), for the
# resume command printed after Ctrl-C.
_ARGV: list[str] = []


T = TypeVar('T')


# The status line printed when a command first enters a phase (on a
# terminal only: logs and captured output stay as they were). Training
# has its own progress bar.
PHASE_LINES = {
    'teacher': "computing the teacher's outputs",
    'baseline': 'training the student alone (--baseline)',
    'export': 'writing the student files',
    'check': 'checking the ONNX file against PyTorch on 5 graphs',
    'measure': 'timing the models for the report (--no-latency skips it)',
}


def _status(name: str) -> None:
    line = PHASE_LINES.get(name)
    if line is not None:
        err_console.print(f'{line}...', markup=False, style='dim')


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one API call; user errors become one line and exit code 1,
    Ctrl-C in a run with training checkpoints one line that says how to
    resume, and exit code 130. On a terminal, a status line names each
    step after training as it starts (:data:`PHASE_LINES`)."""
    try:
        with announce_phases(_status if err_console.is_terminal else None):
            return fn(*args, **kwargs)
    except GnnCompressError as e:
        _error(str(e))
    except RunInterrupted as e:
        err_console.print(resume_line(e), markup=False)
        raise typer.Exit(code=INTERRUPTED_EXIT_CODE) from None
    except (MemoryError, RuntimeError) as e:
        memory = out_of_memory(e)
        if memory is None:
            raise
        _error(memory)


def resume_line(interrupted: RunInterrupted,
                argv: list[str] | None = None) -> str:
    """The one line printed after Ctrl-C: the command that resumes the
    run (this command's arguments, with ``--resume`` the checkpoint)."""
    if not interrupted.saved:
        return ('Interrupted before the first training checkpoint was '
                'written: run the same command again to start over.')
    args, skip = [], False
    for arg in _ARGV if argv is None else argv:
        if skip:
            skip = False
        elif arg == '--resume':
            skip = True
        elif not arg.startswith('--resume='):
            args.append(arg)
    command = shlex.join(['gnncompress', *args, '--resume',
                          str(interrupted.folder)])
    return f'Interrupted; the training checkpoint is kept. Resume with: ' \
        f'{command}'


def _error(message: str, code: int = 1) -> NoReturn:
    """Print ``Error: message`` on one line and exit with ``code``."""
    # Messages quote file contents (tensor names, card values): no markup
    # in them, and one line whatever they hold.
    line = escape(' '.join(message.split()))
    err_console.print(f'[red]Error:[/red] {line}', markup=True)
    raise typer.Exit(code=code) from None


class _OneLineUsage(TyperGroup):
    """Usage errors Click catches (an unknown option, ``--epochs 0``) as
    one ``Error:`` line with exit code 2, instead of a boxed message."""

    def main(self, args: Any = None, *rest: Any,
             standalone_mode: bool = True, **kwargs: Any) -> Any:
        _ARGV[:] = [str(a) for a in (sys.argv[1:] if args is None
                                     else args)]
        try:
            code = super().main(args, *rest, standalone_mode=False,
                                **kwargs)
        except typer.TyperException as e:  # Click's errors (vendored)
            if not standalone_mode:
                raise
            if type(e).__name__ == 'NoArgsIsHelpError':
                e.show()  # the help text itself, as Click prints it
                sys.exit(e.exit_code)
            ctx = getattr(e, 'ctx', None)
            hint = f' (see {ctx.command_path} --help)' if ctx else ''
            message = (e.format_message() if hasattr(e, 'format_message')
                       else str(e))
            line = escape(' '.join((message + hint).split()))
            err_console.print(f'[red]Error:[/red] {line}', markup=True)
            sys.exit(getattr(e, 'exit_code', 2))
        except typer.Abort:
            if not standalone_mode:
                raise
            err_console.print('Aborted!')
            sys.exit(1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _argument_name(param: Any) -> str:
    """An argument as the help shows it: TEACHER, MODEL... (no braces)."""
    name = param.metavar or param.name.upper()
    if param.nargs != 1 and not name.endswith('...'):
        name += '...'
    return name


class Command(TyperCommand):
    """Help as the source writes it: ``Usage: gnncompress distill [OPTIONS]
    TEACHER``, arguments listed by name alone (Typer would show
    ``{TEACHER}`` and ``TEACHER... <list[Path]>``)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == 'argument':
                name = _argument_name(param)
                pieces.append(name if param.required else f'[{name}]')
        return pieces

    def invoke(self, ctx: Any) -> Any:
        # The options are parsed and their checks have done the heavy
        # imports: the collector paused for them runs again.
        resume_collector()
        return super().invoke(ctx)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == 'argument':
                args.append((_argument_name(param), record[1]))
            else:
                opts.append(record)
        for title, rows in (('Arguments', args), ('Options', opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


app = typer.Typer(cls=_OneLineUsage, no_args_is_help=True,
                  rich_markup_mode=None,
                  help='Compress pre-trained GNN checkpoints by knowledge '
                  'distillation.')


def print_summary(report: Any) -> None:
    """The end-of-run lines: load the ONNX student, speed-up, gates."""
    for line in call(api.run_summary, report):
        typer.echo(line)


def print_run(report: Any) -> bool:
    """A finished run's table, its folder and the end-of-run lines; False
    (nothing printed) for a torchrun rank other than 0, which returns no
    report: rank 0 reports."""
    if report is None:
        return False
    typer.echo(report.to_text())
    typer.echo(f"\nwrote {Path(report.files['report_json']).parent}/")
    print_summary(report)
    return True


def exit_on_gates(gates: list[Any]) -> None:
    for gate in gates:
        if gate.passed:
            typer.echo(f'gate {gate.name} {gate.limit:g}: passed')
        else:
            err_console.print(f'[red]gate {gate.name} {gate.limit:g} '
                              f"failed:[/red] {'; '.join(gate.failures)}",
                              markup=True)
    if any(not gate.passed for gate in gates):
        raise typer.Exit(code=GATE_EXIT_CODE)


def _version(value: bool) -> None:
    if value:
        typer.echo(f'gnncompress {__version__}')
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        '--version', callback=_version, is_eager=True,
        help='Print the version.')] = False) -> None:
    """Compress pre-trained GNN checkpoints by knowledge distillation."""
