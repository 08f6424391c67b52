"""The README's Python examples run as written (those that need a run directory are skipped)."""

import re
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = [
    textwrap.dedent(b)
    for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    if "outputs/<date>" not in b
]


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code):
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)


def test_readme_training_commands_pass_the_preflight(tmp_path):
    """Every `python scripts/train.py ...` command in the README is a valid run (the CLI's own preflight:
    the same refusals, nothing run); placeholders such as <run dir> are left out."""
    import shlex

    from dlnlab.lab.cli import preflight

    text = README.read_text()
    commands = [
        line.split("python scripts/train.py", 1)[1]
        for line in re.findall(r"python scripts/train.py[^`\n|]*", text)
    ]
    assert len(commands) >= 8
    for cmd in commands:
        args = shlex.split(cmd.split("#")[0])
        if "<" in cmd or any(a.startswith(("data=file", "init=file")) or a == "..." for a in args):
            continue  # needs a file or a run directory of the reader's own
        args += [f"hydra.run.dir={tmp_path / 'x'}", f"hydra.sweep.dir={tmp_path / 'm'}"]
        assert preflight(args, README.parent / "conf") is None, cmd


def test_readme_links_exist():
    for target in re.findall(r"\]\(([^)#]+)\)|src=\"([^\"]+)\"", README.read_text()):
        path = next(t for t in target if t)
        if not path.startswith("http"):
            assert (README.parent / path).exists(), path


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 200


def test_the_repository_cites_only_its_own_documents():
    """Code, tests, configs and docs cite docs/ inside the repository, never notes kept outside it."""
    root = README.parent
    files = [
        p for ext in ("py", "md", "yaml", "toml") for p in root.rglob(f"*.{ext}") if ".venv" not in p.parts
    ]
    outside = [
        str(p.relative_to(root))
        for p in files
        if re.search(r"\b(math|design|stack-notes)\.md\b|\.\./shared", p.read_text())
    ]
    assert not outside, outside


def test_the_core_imports_neither_lightning_nor_hydra_nor_tensorboard():
    import subprocess
    import sys

    core = "dlnlab, dlnlab.network, dlnlab.problem, dlnlab.init, dlnlab.flow, dlnlab.descent, dlnlab.metrics, dlnlab.analysis, dlnlab.saddles, dlnlab.sme, dlnlab.bounds"
    code = (
        f"import sys, {core}\n"
        "import dlnlab; [getattr(dlnlab, n) for n in dlnlab.__all__ if n != '__version__']\n"
        "print(sorted(m for m in ('lightning', 'hydra', 'omegaconf', 'tensorboard', 'matplotlib') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
