"""Run the shell examples of README.md and docs/*.md as a reader would, and
record how each command ended.

Every fenced block tagged ``bash`` (or ``sh``/``shell``), and every untagged
block whose lines are all commands, is split into commands (lines joined
over a trailing backslash, comments dropped). So are the single-line
``run: gnncompress ...`` steps of a ``yaml`` block (docs/ci.md's pipeline;
its install step reaches a package index this machine cannot) and the
commands written inline in the prose (`` `gnncompress cotrain --data CS
...` ``), after the fenced ones: complete ones only (no ``NAME``-style
placeholder, no option grammar). The commands of one document
run in order in one copy of the repository (its tracked files, as they are
in the working tree), so that a later example finds what an earlier one
wrote, as it would for a reader following the page. The copy sits next to
a link ``shared`` to the project's dataset folder, so ``../shared/datasets``
means what it does in a checkout beside it, and it has a fresh dataset
cache (``GNNCOMPRESS_CACHE``) seeded with the raw files of that folder: the
files PyG would download on a machine with a network, which this one lacks.
``gnncompress`` and ``python`` are the copy's ``.venv`` once an example has
made one (the quick start does), else the running interpreter's with the
copy first on ``PYTHONPATH``.

One JSON file per command under benchmarks/results/examples/: the command,
exit code, wall seconds and peak resident memory (``/usr/bin/time``: the
largest process of the command), the load average (1 minute) when it
started (other work on the machine stretches the wall time), the tail
of its output (and its head, when it failed), or why it was skipped (a
usage synopsis, a GPU, the whole test suite, data that has no copy here,
a placeholder, a resume that needs an interrupted run), and the ``run``
it belongs to: when its document's run started.

Resumable per document, since a command may need what an earlier one of
its document wrote: a document is done when each of its commands has a
result of the same run, for the command as the page now writes it; a
document that is not done (a result missing, from another run, or for a
changed command: say an interrupted run, or an edited page) runs again
whole, from its first command, in a fresh copy, and its result files are
replaced (those of commands the page no longer has are removed).
``--force DOC`` reruns a done document. ``--report`` prints the table of
all results, then each document's counts, and writes them to
docs/BENCHMARKS.md (commands in ``<code>``: backticks would make them
examples of that page).

    python benchmarks/examples.py --list
    python benchmarks/examples.py [--timeout 600] [--only README]
        [--force README]
    python benchmarks/examples.py --report
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import machine, update_doc, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / 'results' / 'examples'
DATASETS = REPO.parent / 'shared' / 'datasets'
SHELL_TAGS = {'bash', 'sh', 'shell'}
COMMAND_WORDS = ('gnncompress', 'python', 'python3', '.venv/', 'bash',
                 'pip')
# Commands that are not run, and why (first match wins).
SKIPS: list[tuple[str, str]] = [
    (r'--device cuda|\bcuda\b', 'needs a GPU'),
    (r'pytest -q tests$|pytest -q tests ',
     'the whole test suite: CI runs it (.ci/run), not this script'),
    (r'^gnncompress export run/student\.safetensors',
     'needs the student of a run that failed (the text describes one)'),
    (r'--data big\.pt\b', "a placeholder for the reader's own large graph"),
    (r'--data PPI\b', 'PPI has no copy on this machine (no network; '
     'shared/datasets/README.md: no public copy could be retrieved)'),
    (r'(^|\s)[A-Z][A-Z_]{2,}\.(pt|onnx|safetensors)\b',
     'a placeholder file name (the text says what it stands for)'),
    (r'--resume\b', 'continues an interrupted run: the run before it ends '
     'here, and an ended run leaves no checkpoint (tests/training/'
     'test_resume.py interrupts runs and resumes them)'),
]


SUBCOMMANDS = ('distill', 'cotrain', 'train-teacher', 'export', 'bench',
               'amalgamate', 'inspect')
# Capitalised words an inline command may hold: dataset names after --data.
DATASET_WORDS = {'CS', 'MUTAG', 'PPI', 'PROTEINS', 'ENZYMES', 'NCI1',
                 'IMDB-BINARY'}


@dataclass
class Example:
    doc: str        # README, robustness, ...
    block: int      # fenced block number in the document, from 1
    index: int      # command number in the block, from 1
    line: int       # line of the block's opening fence
    command: str
    synopsis: bool  # the block is a usage synopsis, not commands

    @property
    def name(self) -> str:
        return f'{self.doc}-b{self.block:02d}-c{self.index:02d}'


def blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """``(line, tag, lines)`` of every fenced block."""
    out: list[tuple[int, str, list[str]]] = []
    current: tuple[int, str, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith('```'):
            if current is None:
                current = (number, line[3:].strip(), [])
            else:
                out.append(current)
                current = None
        elif current is not None:
            current[2].append(line)
    return out


def commands(lines: list[str]) -> list[str]:
    """Logical commands: continuation lines joined, comments dropped."""
    out: list[str] = []
    pending = ''
    for line in lines:
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith('#')):
            continue
        if stripped.endswith('\\'):
            pending += stripped[:-1].rstrip() + ' '
            continue
        out.append((pending + stripped).strip())
        pending = ''
    if pending:
        out.append(pending.strip())
    return out


def _is_command(cmd: str) -> bool:
    words = cmd.split()
    while words and re.fullmatch(r'[A-Z_][A-Z0-9_]*=\S*', words[0]):
        words = words[1:]  # VAR=value prefixes
    return bool(words) and words[0].startswith(COMMAND_WORDS)


def inline(text: str) -> list[tuple[int, str]]:
    """``(line, command)`` of every complete command written inline in
    the prose (outside fenced blocks)."""
    out = []
    fenced = False
    prose = []
    for line in text.splitlines():
        if line.startswith('```'):
            fenced = not fenced
            line = ''
        prose.append('' if fenced else line)
    joined = '\n'.join(prose)
    for match in re.finditer(r'`(gnncompress [^`]+)`', joined):
        words = match.group(1).split()
        if len(words) < 3 or words[1] not in SUBCOMMANDS or \
                re.search(r'[\[|]|\.\.\.', match.group(1)):
            continue
        if words[2].startswith('--') and words[1] not in ('cotrain',
                                                           'train-teacher') \
                and words[2] != '--list-methods':
            continue  # a fragment: the checkpoint is left out
        if any(re.fullmatch(r'[A-Z][A-Z0-9_-]+', w) and
               not (w in DATASET_WORDS and words[i - 1] == '--data')
               for i, w in enumerate(words)):
            continue  # a placeholder (NAME, FILE, ...)
        out.append((joined.count('\n', 0, match.start()) + 1,
                    ' '.join(words)))
    return out


def extract(path: Path) -> list[Example]:
    out: list[Example] = []
    number = 0
    text = path.read_text()
    for line, tag, lines in blocks(text):
        if tag == 'yaml':
            steps = [m.group(1) for m in
                     (re.match(r'\s*run: (gnncompress .*)', t) for t in lines)
                     if m]
            if steps:
                number += 1
                out += [Example(path.stem, number, i, line, cmd, False)
                        for i, cmd in enumerate(steps, 1)]
            continue
        cmds = commands(lines)
        if not cmds or not (tag in SHELL_TAGS or
                            (tag == '' and all(map(_is_command, cmds)))):
            continue
        number += 1
        if any('[--' in text for text in lines):  # one record for it
            out.append(Example(path.stem, number, 1, line,
                               '\n'.join(cmds), True))
            continue
        out += [Example(path.stem, number, i, line, cmd, False)
                for i, cmd in enumerate(cmds, 1)]
    out += [Example(path.stem, 99, i, line, cmd, False)  # 99: inline
            for i, (line, cmd) in enumerate(inline(text), 1)]
    return out


def skip_reason(example: Example) -> str | None:
    if example.synopsis:
        return 'usage synopsis (option grammar), not a command'
    for pattern, reason in SKIPS:
        if re.search(pattern, example.command):
            return reason
    return None


def prepare(base: Path, datasets: Path) -> Path:
    """A fresh copy of the repository for one document, beside a
    ``shared`` link and a seeded dataset cache."""
    shutil.rmtree(base, ignore_errors=True)
    repo = base / 'repo'
    tmp = base / 'repo.partial'
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, check=True,
                           capture_output=True).stdout.split(b'\0')
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            target = tmp / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shared = base / 'shared'
    if datasets.exists() and not shared.exists():
        shared.mkdir()
        (shared / 'datasets').symlink_to(datasets.resolve())
    cache = base / 'cache' / 'datasets'  # GNNCOMPRESS_CACHE's layout
    if datasets.exists() and not cache.exists():
        shutil.copytree(datasets, cache, copy_function=shutil.copyfile)
        for folder, _, names in os.walk(cache):  # the source is read-only
            os.chmod(folder, 0o755)
            for name in names:
                os.chmod(Path(folder) / name, 0o644)
    tmp.rename(repo)
    return repo


def environment(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env['GNNCOMPRESS_CACHE'] = str(repo.parent / 'cache')
    venv = repo / '.venv' / 'bin'
    if venv.exists():
        env['PATH'] = f"{venv}:{env['PATH']}"
        env.pop('PYTHONPATH', None)
    else:
        env['PATH'] = f"{Path(sys.executable).parent}:{env['PATH']}"
        env['PYTHONPATH'] = str(repo)
    return env


def run_one(example: Example, repo: Path, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile('r', suffix='.time') as stats, \
            tempfile.TemporaryFile('w+') as log:
        load = os.getloadavg()[0]  # other work on the machine slows it
        start = time.perf_counter()
        # Its own process group: a timeout ends the command's whole tree.
        proc = subprocess.Popen(
            ['/usr/bin/time', '-f', '%M', '-o', stats.name, 'bash', '-eo',
             'pipefail', '-c', example.command],
            cwd=repo, env=environment(repo), stdout=log,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
            status = 'ok' if code == 0 else 'failed'
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code, status = None, 'timeout'
        wall = time.perf_counter() - start
        log.seek(0)
        output = without_machine_paths(log.read(), repo)
        kib = stats.read().strip().splitlines()
    peak = int(kib[-1]) / 1024 if kib and kib[-1].isdigit() else None
    head = {} if status == 'ok' or len(output) <= 3000 else \
        {'output_head': output[:3000]}  # a traceback before a long summary
    return {**head, 'status': status, 'exit_code': code,
            'wall_s': round(wall, 1),
            'peak_rss_mb': None if peak is None else round(peak),
            'load_before': round(load, 2),
            'output_tail': output[-3000:]}


def without_machine_paths(output: str, repo: Path) -> str:
    """``output`` with this machine's folders named for what they are: the
    page's copy of the repository as ``.``, the checkout this script runs
    from as ``<checkout>``, whatever else under /tmp as ``<tmp>``."""
    output = re.sub(r'(?:\.\./)+' + re.escape(str(REPO).lstrip('/')),
                    '<checkout>', output)
    output = output.replace(str(repo), '.').replace(str(REPO), '<checkout>')
    return re.sub(r'/tmp/[^\s:\'"]*', '<tmp>', output)


def all_examples(only: str | None) -> list[Example]:
    docs = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
    out = [e for doc in docs for e in extract(doc)]
    return [e for e in out if only is None or e.doc == only]


def done(examples: list[Example]) -> bool:
    """Each command of the document has a result of one and the same run,
    for the command as written now."""
    runs = set()
    for example in examples:
        path = OUT / f'{example.name}.json'
        if not path.exists():
            return False
        row = json.loads(path.read_text())
        if row.get('command') != example.command:
            return False
        runs.add(row.get('run'))
    return len(runs) <= 1


def counts() -> str:
    """Each document's results by status, and whether they are one run of
    the page as it is now."""
    current = all_examples(None)
    lines = ['| document | ok | failed | timeout | skipped | one run of the '
             'current page |', '|---|---|---|---|---|---|']
    for doc in dict.fromkeys(e.doc for e in current):
        rows = [json.loads(p.read_text())
                for p in sorted(OUT.glob(f'{doc}-b*.json'))]
        tally = [sum(r['status'] == s for r in rows)
                 for s in ('ok', 'failed', 'timeout', 'skipped')]
        mine = [e for e in current if e.doc == doc]
        lines.append(f"| {doc} | {' | '.join(map(str, tally))} | "
                     f"{'yes' if done(mine) else 'no'} |")
    return '\n'.join(lines)


def report(doc: bool = False) -> str:
    """The table of all results; ``doc``: for docs/BENCHMARKS.md, where a
    command in backticks would be an example of that page."""
    rows = [json.loads(p.read_text()) for p in sorted(OUT.glob('*.json'))]
    lines = ['| example | line | command | status | exit | wall s '
             '| peak RSS MB | load | note |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        command = r['command'] if len(r['command']) < 90 else \
            r['command'][:87] + '...'
        command = command.replace('|', '/').replace('\n', ' ')
        command = f'<code>{command}</code>' if doc else f'`{command}`'
        note = r.get('reason') or ''
        if r['status'] in ('failed', 'timeout'):
            tail = [t for t in r['output_tail'].strip().splitlines() if t]
            note = tail[-1][:160] if tail else ''
        lines.append(
            f"| {r['name']} | {r['line']} | {command} | {r['status']} | "
            f"{'' if r.get('exit_code') is None else r['exit_code']} | "
            f"{r.get('wall_s') or ''} | {r.get('peak_rss_mb') or ''} | "
            f"{r.get('load_before', '')} | {note.replace('|', '/')} |")
    if doc:
        machines = sorted({r['machine'] for r in rows if r.get('machine')})
        lines += ['', counts(), '', f"Machine: {'; '.join(machines)}."]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--list', action='store_true')
    parser.add_argument('--report', action='store_true')
    parser.add_argument('--only', help='one document: README, robustness')
    parser.add_argument('--timeout', type=float, default=600.0)
    parser.add_argument('--force', action='append', default=[],
                        help='rerun this document (README, guide, ...) '
                        'even if it is done, repeatable')
    parser.add_argument('--datasets', type=Path, default=DATASETS,
                        help='the raw dataset folder (default: '
                        '../shared/datasets beside the repository)')
    parser.add_argument('--work', type=Path,
                        default=Path(tempfile.gettempdir()) /
                        'gnncompress-examples',
                        help='where the copies of the repository go')
    args = parser.parse_args(argv)
    if args.report:
        print(report())
        print()
        print(counts())
        update_doc('examples', report(doc=True))
        return
    examples = all_examples(args.only)
    if args.list:
        for example in examples:
            print(f'{example.name} ({skip_reason(example) or "run"}): '
                  f'{example.command}')
        return
    for doc in dict.fromkeys(e.doc for e in examples):
        mine = [e for e in examples if e.doc == doc]
        if doc not in args.force and done(mine):
            continue
        run_document(doc, mine, args)


def run_document(doc: str, examples: list[Example],
                 args: argparse.Namespace) -> None:
    """Every command of one document in order, in a fresh copy."""
    run = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    names = {f'{e.name}.json' for e in examples}
    for stale in OUT.glob(f'{doc}-b*.json'):
        if stale.name not in names:
            stale.unlink()
    repo = None
    for example in examples:
        reason = skip_reason(example)
        row = {'name': example.name, **asdict(example), 'run': run}
        if reason:
            row.update(status='skipped', reason=reason)
        else:
            print(f'{example.name}: {example.command}', flush=True)
            if repo is None:
                repo = prepare(args.work / doc, args.datasets)
            row.update(run_one(example, repo, args.timeout),
                       machine=machine())
            print(f"  {row['status']} in {row['wall_s']} s", flush=True)
        write_json(OUT / f'{example.name}.json', row)

if __name__ == '__main__':
    main()
