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


def test_readme_documents_every_config_key():
    """Every key of the schema (every option of data and init included) is in the README's tables."""
    import dataclasses

    from dlnlab.lab.schema import DATA_OPTIONS, INIT_OPTIONS, TrainConfig

    keys = ["seed"]
    for f in dataclasses.fields(TrainConfig):
        classes = {"data": DATA_OPTIONS.values(), "init": INIT_OPTIONS.values()}.get(f.name)
        if classes is None:
            factory = f.default_factory
            classes = [factory] if dataclasses.is_dataclass(factory) else []
            if not classes:  # logger, callbacks: keys of their own
                keys.append(f.name)
        for cls in classes:
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(cls)]
    text = README.read_text()
    missing = sorted({k for k in keys if f"`{k}`" not in text})
    assert not missing, f"README does not document: {missing}"


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
