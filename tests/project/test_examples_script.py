"""benchmarks/examples.py finds the examples of a page as a reader sees
them: fenced shell blocks split into commands, usage synopses kept whole
and skipped, the pipeline's run steps, complete inline commands."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'benchmarks'))
import examples  # noqa: E402  (benchmarks/examples.py)

PAGE = '''# Title

Run `gnncompress cotrain --data CS --arch sage --out out/` or
`gnncompress distill CKPT --data NAME` (a placeholder) or
`gnncompress export --quantize int8` (a fragment).

```bash
python3 -m venv .venv && .venv/bin/pip install -e .
# a comment
gnncompress distill t.pt --student gcn \\
    --out out/
```

```bash
gnncompress bench MODEL... (--data NAME|FILE)
    [--runtimes eager] [--threads 1,2]
```

```
| a table | not commands |
```

```yaml
steps:
  - name: teacher
    run: gnncompress train-teacher --config c.toml --out t.pt
  - run: |
      pip install x
```
'''


def test_extract_finds_each_kind_of_example(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text(PAGE)
    found = [(e.block, e.index, e.command, examples.skip_reason(e))
             for e in examples.extract(page)]
    assert found == [
        (1, 1, 'python3 -m venv .venv && .venv/bin/pip install -e .', None),
        (1, 2, 'gnncompress distill t.pt --student gcn --out out/', None),
        (2, 1, 'gnncompress bench MODEL... (--data NAME|FILE)\n'
               '[--runtimes eager] [--threads 1,2]',
         'usage synopsis (option grammar), not a command'),
        (3, 1, 'gnncompress train-teacher --config c.toml --out t.pt', None),
        (99, 1, 'gnncompress cotrain --data CS --arch sage --out out/', None),
    ]
    assert examples.extract(page)[0].line == 7


def test_skip_reasons():
    def reason(command: str) -> str | None:
        return examples.skip_reason(
            examples.Example('d', 1, 1, 1, command, False))

    assert reason('gnncompress distill t.pt --device cuda') == 'needs a GPU'
    assert 'test suite' in reason('.venv/bin/python -m pytest -q tests')
    assert 'PPI' in reason('gnncompress train-teacher --data PPI --out p.pt')
    assert reason('gnncompress train-teacher --data SyntheticPPI') is None
    assert 'placeholder' in reason('gnncompress distill LAYOUT.pt --epochs 2')
    assert reason('gnncompress amalgamate T1.pt T2.pt --out d') is None
    assert 'interrupted' in reason('gnncompress distill t.pt --resume run/')


def test_a_document_reruns_whole_in_a_fresh_copy(tmp_path, monkeypatch):
    """A later command needs what an earlier one wrote: a resumed run
    must not run it alone in a copy that lacks that file."""
    monkeypatch.setattr(examples, 'OUT', tmp_path / 'results')
    monkeypatch.setattr(examples, 'machine', lambda: 'test')
    page = [examples.Example('page', 1, 1, 1, 'echo made > made.txt', False),
            examples.Example('page', 1, 2, 1, 'cat made.txt', False)]
    args = examples.argparse.Namespace(
        work=tmp_path / 'work', datasets=tmp_path / 'none', timeout=60.0)
    (tmp_path / 'results').mkdir()
    (tmp_path / 'results' / 'page-b09-c01.json').write_text('{}')  # stale

    def status() -> list[str]:
        return [examples.json.loads(
            (tmp_path / 'results' / f'{e.name}.json').read_text())['status']
            for e in page]

    assert not examples.done(page)
    examples.run_document('page', page, args)
    assert status() == ['ok', 'ok'] and examples.done(page)
    assert not (tmp_path / 'results' / 'page-b09-c01.json').exists()
    # an interrupted rerun: the second command's result is missing
    (tmp_path / 'results' / 'page-b01-c02.json').unlink()
    assert not examples.done(page)
    examples.run_document('page', page, args)  # fresh copy, from the first
    assert status() == ['ok', 'ok'] and examples.done(page)
    # results of two runs are not one done document
    row = examples.json.loads((tmp_path / 'results' /
                               'page-b01-c01.json').read_text())
    examples.write_json(tmp_path / 'results' / 'page-b01-c01.json',
                        {**row, 'run': 'earlier'})
    assert not examples.done(page)
    # a command the page now writes otherwise is not done either
    page[1] = examples.Example('page', 1, 2, 1, 'cat made.txt >&2', False)
    examples.write_json(tmp_path / 'results' / 'page-b01-c01.json', row)
    assert not examples.done(page)
