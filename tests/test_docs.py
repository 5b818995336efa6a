"""Every ```python block of README.md and docs/*.md runs (blocks of one file share a namespace, in order)."""

import os
import re
from pathlib import Path

import pytest

from .conftest import REPO, SHARED

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!--\s*test:\s*(?P<flag>[\w-]+)\s*-->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def python_blocks(path: Path):
    return [(m.group("flag"), m.group("code")) for m in BLOCK.finditer(path.read_text())]


@pytest.mark.parametrize("path", [p for p in DOCS if p.exists() and python_blocks(p)], ids=lambda p: p.name)
def test_doc_code_blocks_run(path, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    namespace = {"SHARED": str(SHARED), "__name__": "__doc_test__"}
    for index, (flag, code) in enumerate(python_blocks(path)):
        if flag == "slow" and "slow" not in (request.config.getoption("-m") or "") and not os.environ.get("LLM_CODEC_SLOW"):
            pytest.skip("slow doc block (set LLM_CODEC_SLOW=1)")
        try:
            exec(compile(code, f"{path.name}[block {index}]", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            raise AssertionError(f"{path.name} block {index} failed: {error!r}\n{code}") from error
