"""The examples of docs/*.md run as written, in the spirit of tests/test_readme.py.

- Every ```python block runs; a bare expression whose comment starts with a value (``# 0.403 at eta``,
  ``# ('strict', -1.9332 ...``) gives that value to the digits shown. A block that opens a run's files
  (``outputs/<date>/<time>``) runs on the session's tiny run; a block marked
  ``<!-- excerpt of <file> -->`` is checked to be that file's text, verbatim.
- Every ``python scripts/train.py ...`` command passes the command line's preflight (sweeps, ``-m``,
  job by job, as the preflight takes them); placeholders (``<run dir>``, ``[overrides]``, ``...``) and
  files of the reader's own are left out, as in tests/test_readme.py.
- The other scripts' commands: every option the docs give a script is one of its arguments, and the
  commands without placeholders pass the script's own argument parsing (``parse``), run in an empty
  directory: nothing runs, nothing is written.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
SLOW_BLOCKS = {  # (page, block): why it is in the slow run
    ("eos.md", 0): "integrate_central and edge_report over 168 steps of GD: 13-35 s here",
    ("api.md", 0): "the flow over t <= 300 and 30,000 GD steps: 3-4 s (the README's block, run by "
    "tests/test_readme.py in the default run, takes the same path)",
}
RUN_DIR = "outputs/<date>/<time>"  # a block with it reads a run's files: the session's tiny run's


def _blocks() -> list:
    params = []
    for page in PAGES:
        text = page.read_text()
        found = re.finditer(
            r"(<!-- excerpt of ([^\s:]+)[^\n]*\n)?( *)```python\n(.*?)^ *```", text, re.S | re.M
        )
        for i, m in enumerate(found):
            code, source = textwrap.dedent(m.group(4)), m.group(2)
            marks = [pytest.mark.slow] if (page.name, i) in SLOW_BLOCKS else []
            if RUN_DIR in code:
                marks.append(pytest.mark.xdist_group("tiny_run"))  # with the tiny run's other users
            params.append(pytest.param(page, code, source, marks=marks, id=f"{page.stem}{i}"))
    return params


def _stated(comment: str) -> list:
    """The values a comment starts with: numbers and quoted strings up to the first other word."""
    values = []
    for token in re.split(r",\s*", comment.strip().lstrip("([").strip()):
        if m := re.fullmatch(r"'([^']*)'", token):
            values.append(m.group(1))
        elif m := re.match(r"-?\d+(\.\d+)?(e-?\d+)?(?![\w.])", token):
            values.append(m.group(0))
            if m.group(0) != token.rstrip(")]"):
                break  # "0.403 at eta = 0.01": the value, then words
        else:
            break
    return values


def _flat(value) -> list:
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _flat(v)]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return _flat(value.tolist())
    return [value]


def _check_stated(code: str, node: ast.Expr, value) -> None:
    line = code.splitlines()[node.end_lineno - 1]
    after = line[node.end_col_offset :]
    comment = after.split("#", 1)[1] if "#" in after else ""
    stated, got = _stated(comment), _flat(value)
    for want, have in zip(stated, got):
        if isinstance(have, str) or hasattr(have, "value"):  # a string, or an enum by its value
            assert str(getattr(have, "value", have)) == want, (line, got)
        else:  # to the digits shown: 0.403 stands for [0.4025, 0.4035], 4.05e-27 for [4.045e-27, 4.055e-27]
            half_unit = 0.5 * 10.0 ** Decimal(want).as_tuple().exponent
            assert abs(float(have) - float(want)) <= half_unit * (1 + 1e-9), (line, got[:8])
    assert len(got) >= len(stated), (line, got)


@pytest.mark.parametrize(("page", "code", "source"), _blocks())
def test_the_python_blocks_of_the_docs_run_and_give_what_they_say(page, code, source, request):
    if source is not None:
        assert code in (ROOT / source).read_text(), f"{page.name}: the excerpt is not {source}'s text"
        return
    if RUN_DIR in code:
        code = code.replace(RUN_DIR, str(request.getfixturevalue("tiny_run")))
    namespace: dict = {}
    for node in ast.parse(code).body:
        if isinstance(node, ast.Expr):
            value = eval(compile(ast.Expression(node.value), str(page), "eval"), namespace)
            _check_stated(code, node, value)
        else:
            exec(compile(ast.Module([node], []), str(page), "exec"), namespace)


def _text(page: Path) -> str:
    """The page with a command's continuation lines (``\\``) and an inline command broken over two lines joined."""
    text = page.read_text().replace("\\\n", " ")
    return re.sub(r"(?<!`)`[^`\n]+\n[^`\n]+`(?!`)", lambda m: m.group(0).replace("\n", " "), text)


def _commands(script: str) -> list[tuple[str, str, list[str], str]]:
    """(page, what precedes it, arguments, comment) of every ``python <script> ...`` in the docs
    (``script``: ``scripts/train.py``, ``-m scripts.bench``, ...; up to a ``&&`` or ``;``); a quoted refusal (``$ python ...``
    then ``error: ...``: tests/test_docs.py checks those) left out."""
    found = []
    for page in PAGES:
        pattern = rf"^(\$ )?(.*?)python {re.escape(script)}(?![\w.])([^`\n|#&;]*)(#[^`\n]*)?(\nerror:)?"
        for m in re.finditer(pattern, _text(page), re.M):
            if not m.group(5):
                found.append((page.name, m.group(2), shlex.split(m.group(3)), m.group(4) or ""))
    return found


def _placeholder(args: list[str]) -> bool:
    return any("<" in a or a in ("...", "[", "]") or a.startswith("[") or a.isupper() for a in args)


def _jobs(args: list[str]) -> int:
    """How many jobs a command line is: a sweep (-m) has one per combination of its comma lists."""
    if "-m" not in args and "--multirun" not in args:
        return 1
    count = 1
    for a in args:
        value = a.partition("=")[2]
        if "=" in a and "," in value and not value.startswith(("[", "'", '"')):
            count *= len(value.split(","))
    return count


def _training_commands() -> list:
    params, seen = [], set()
    for page, prefix, args, _ in _commands("scripts/train.py"):
        if _placeholder(args) or "PYTHONPATH" in prefix or tuple(args) in seen:
            continue  # a run directory, a module or a cluster of the reader's own; or checked already
        if any(a.startswith(("data.path=/abs", "init.path=/abs")) for a in args):
            continue  # the reader's own file
        seen.add(tuple(args))
        # each job is composed and checked in turn (0.2-0.3 s a job): the larger sweeps in the slow run
        marks = [pytest.mark.slow] if _jobs(args) > 2 else []
        params.append(pytest.param(args, marks=marks, id=f"{page}:{' '.join(args)[:60]}"))
    return params


TRAINING_COMMANDS = _training_commands()


def test_the_docs_give_training_commands():
    assert len(TRAINING_COMMANDS) >= 15


@pytest.mark.parametrize("args", TRAINING_COMMANDS)
def test_a_training_command_of_the_docs_passes_the_preflight(args, tmp_path, monkeypatch):
    from dlnlab.lab import cli

    # a single run's preflight forks its flow's solve for the run to claim (dlnlab/lab/runner/_ahead.py);
    # nothing runs here, so nothing is started
    monkeypatch.setattr(cli, "_start_early", lambda plan: None)
    argv = [*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert cli.preflight(argv, ROOT / "conf") is None


# a script's parse-only function (the whole check before any work: nothing is run or written), or
# None where the arguments are parsed inside main, which then works (tb, config_doc, the benchmarks)
SCRIPTS = {
    "scripts/aggregate.py": "parse", "scripts/eos_lab.py": "parse", "scripts/figure1.py": "parse",
    "scripts/limit.py": "parse", "scripts/plot.py": "parse", "scripts/eos.py": "parse",
    "scripts/tb.py": None, "scripts/config_doc.py": None,
    "-m scripts.bench": "parse_args", "-m scripts.bench.cost": "parse", "-m scripts.bench.flow": "parse",
    "-m scripts.bench.parallel": None,
}  # fmt: skip
SLOW_PARSE = {"scripts/limit.py": "its check builds the 4096 + 256 members' initial weights: 2.5 s"}


def _source(script: str) -> Path:
    if script.startswith("-m "):
        path = ROOT / script[3:].replace(".", "/")
        return path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
    return ROOT / script


def _documented_options(script: str) -> set[str]:
    """The options the docs give the script: in its commands (their comments too) and in its section of
    docs/scripts.md."""
    option = r"(?<![\w-])(--[a-z][\w-]*|-[a-z](?= ))"
    options = {
        o
        for *_, args, comment in _commands(script)
        for o in re.findall(option, f"{' '.join(args)} {comment}")
    }
    name = Path(script).name
    section = (ROOT / "docs" / "scripts.md").read_text().partition(f"## {name}")[2].split("\n## ")[0]
    for span in re.findall(r"`([^`]+)`", section) if name.endswith(".py") else ():
        options |= set(re.findall(option, span))
    return options - {"-m"}


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_the_options_the_docs_give_a_script_are_its_own(script):
    declared = re.findall(
        r"add_argument\(\s*(?:\"(-[\w-]+)\",\s*)?\"(--[\w-]+)\"", _source(script).read_text()
    )
    unknown = _documented_options(script) - {o for pair in declared for o in pair if o}
    assert not unknown, f"the docs give {script} options it does not have: {sorted(unknown)}"


def test_every_script_is_looked_at():
    names = {p.stem for p in (ROOT / "scripts").glob("*.py")} - {"train"}
    assert {f"scripts/{n}.py" for n in names} <= set(SCRIPTS)


def _script_commands() -> list:
    params, seen = [], set()
    for script, parse in SCRIPTS.items():
        for page, _, args, _ in _commands(script) if parse else ():
            if _placeholder(args) or (script, tuple(args)) in seen:
                continue
            seen.add((script, tuple(args)))
            marks = [pytest.mark.slow] if script in SLOW_PARSE else []
            params.append(pytest.param(script, args, marks=marks, id=f"{page}:{script} {' '.join(args)}"))
    return params


@pytest.mark.parametrize(("script", "args"), _script_commands())
def test_a_script_command_of_the_docs_parses(script, args, tmp_path, monkeypatch):
    """The script's own check of its arguments, in an empty directory (a default output such as
    outputs/limit/<date>/<time> is checked there, never made); a refusal exits 2 with its one line."""
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location(f"doc_{Path(script).stem}", _source(script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    getattr(module, SCRIPTS[script])(args)
    assert not any(tmp_path.iterdir())  # nothing written
