"""Every ```python block of README.md and docs/*.md runs (blocks of one file share a namespace, in order).

A block preceded by `<!-- test: slow -->` needs the real default LM: its file then runs as a slow test.
Every `llm-codec ...` command of the ```bash blocks is parsed by the real argument parser (not run: those commands
need real data), so a renamed command, flag or choice breaks the docs test.
"""

import re
from pathlib import Path

import pytest

from .conftest import REPO

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
    namespace = {"__name__": "__doc_test__"}
    for index, (_, code) in enumerate(python_blocks(path)):
        try:
            exec(compile(code, f"{path.name}[block {index}]", "exec"), namespace)
        except Exception as error:  # pragma: no cover - the message is the point
            raise AssertionError(f"{path.name} block {index} failed: {error!r}\n{code}") from error


SHELL_BLOCK = re.compile(r"```bash\n(?P<code>.*?)```", re.S)


def llm_codec_command_lines():
    """Every `llm-codec ...` command of the ```bash blocks of README.md and docs/*.md (continuations joined)."""
    import shlex

    for path in DOCS:
        for block in SHELL_BLOCK.finditer(path.read_text()):
            for line in block.group("code").replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].split(" > ")[0].split(" | ")[0].strip()  # no comments, redirections
                line = line.replace("[", "").replace("]", "")  # [optional arguments] are parsed too
                if line.startswith("llm-codec "):
                    yield pytest.param(shlex.split(line)[1:], id=f"{path.name}: {line[:60]}")


@pytest.mark.parametrize("argv", list(llm_codec_command_lines()))
def test_doc_commands_parse(argv, capsys):
    """The CLI commands shown in the docs exist with those flags and values (parsed, not run: they need real data)."""
    from llm_codec.cli import build_parser

    parser = build_parser()
    if "--help" in argv or "-h" in argv:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 0
        return
    try:
        parser.parse_args(argv)
    except SystemExit as error:  # argparse: unknown command, flag or choice
        raise AssertionError(f"`llm-codec {' '.join(argv)}` does not parse: {capsys.readouterr().err}") from error


def test_docs_show_cli_commands():
    assert len(list(llm_codec_command_lines())) >= 15
