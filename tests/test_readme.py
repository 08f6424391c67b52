"""The README's Python examples run as written (those that need a run directory are skipped)."""

import os
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
    files = []  # .venv pruned from the walk (rglob walked all of it, 1 s, before dropping its files)
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d != ".venv"]
        files += [Path(folder, n) for n in names if n.endswith((".py", ".md", ".yaml", ".toml"))]
    outside = [
        str(p.relative_to(root))
        for p in files
        if re.search(r"\b(math|design|stack-notes)\.md\b|\.\./shared", p.read_text())
    ]
    assert not outside, outside


def test_the_core_the_plots_and_a_refused_run_import_only_what_they_need(tmp_path):
    """One fresh interpreter, four checks in turn (each import adds to the last, so each line holds
    what the part alone would import): dlnlab.rundir (reading and writing run files) imports no torch;
    the core (and every name dlnlab exports) imports neither
    Lightning, Hydra, OmegaConf, TensorBoard nor matplotlib; dlnlab.plots neither Lightning, Hydra nor
    matplotlib.pyplot; a run whose config the lab rejects (sgd.lrs with a 0) is refused before
    Lightning is imported. (One process, not three: each start costs ~2.5 s of imports.)"""
    import subprocess
    import sys

    core = "dlnlab, dlnlab.network, dlnlab.problem, dlnlab.init, dlnlab.flow, dlnlab.descent, dlnlab.metrics, dlnlab.analysis, dlnlab.saddles, dlnlab.sme, dlnlab.bounds"
    conf = str(README.parent / "conf")
    code = (
        "import sys\n"
        "def loaded(names):\n"
        "    return sorted(m for m in names if m in sys.modules)\n"
        "import dlnlab.rundir\n"
        "print('rundir', loaded(('torch', 'lightning', 'hydra', 'matplotlib')))\n"
        f"import {core}\n"
        "import dlnlab; [getattr(dlnlab, n) for n in dlnlab.__all__ if n != '__version__']\n"
        "print('core', loaded(('lightning', 'hydra', 'omegaconf', 'tensorboard', 'matplotlib')))\n"
        "import dlnlab.plots\n"
        "print('plots', loaded(('lightning', 'hydra', 'matplotlib.pyplot')))\n"
        "import dlnlab.lab.config._schema  # registers the schema with Hydra\n"
        "from hydra import compose, initialize_config_dir\n"
        f"with initialize_config_dir(version_base='1.3', config_dir={conf!r}):\n"
        "    cfg = compose(config_name='train', overrides=['sgd.lrs=[0.01,0]'])\n"
        "from dlnlab.lab.runner._driver import run\n"
        "from dlnlab.lab.config._errors import ConfigError\n"
        "try:\n"
        f"    run(cfg, output_dir={str(tmp_path / 'r')!r})\n"
        "except ConfigError as err:\n"
        "    print('rejected:', err)\n"
        "print('refused run', loaded(('lightning',)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[:3] == ["rundir []", "core []", "plots []"], proc.stdout
    assert lines[3].startswith("rejected: sgd.lrs") and lines[4:] == ["refused run []"], proc.stdout
