"""Every ```python block of README.md and docs/*.md runs (blocks of one file share a namespace, in order).

A block preceded by `<!-- test: slow -->` needs the real default LM: its file then runs as a slow test.
"""

import re
from pathlib import Path

import pytest

from .conftest import REPO, SHARED

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!--\s*test:\s*(?P<flag>[\w-]+)\s*-->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def python_blocks(path: Path):
    return [(m.group("flag"), m.group("code")) for m in BLOCK.finditer(path.read_text())]


def doc_params():
    for path in DOCS:
        blocks = python_blocks(path) if path.exists() else []
        if blocks:
            slow = any(flag == "slow" for flag, _ in blocks)
            yield pytest.param(path, id=path.name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("path", list(doc_params()))
def test_doc_code_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"SHARED": str(SHARED), "__name__": "__doc_test__"}
    for index, (_, code) in enumerate(python_blocks(path)):
        try:
            exec(compile(code, f"{path.name}[block {index}]", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            raise AssertionError(f"{path.name} block {index} failed: {error!r}\n{code}") from error
