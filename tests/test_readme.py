"""The README's Python examples run as written (those that need a run directory are skipped)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = [
    b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "outputs/<date>" not in b
]


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code):
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)


def test_readme_documents_every_config_key():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(version_base="1.3", config_dir=str(README.parent / "conf")):
        cfg = OmegaConf.to_container(compose(config_name="train"))
    text = README.read_text()
    keys = [f"{group}.{key}" for group, sub in cfg.items() if isinstance(sub, dict) for key in sub]
    missing = [k for k in keys + ["seed"] if f"`{k}`" not in text and f"`{k}`," not in text]
    assert not missing, f"README does not document: {missing}"
