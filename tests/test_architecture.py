"""The import direction of the package (`.importlinter`, docs/architecture.md): the transformers-shaped core never
imports training, evaluation or the CLIs, and evaluation never imports training."""

import shutil
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_imports_follow_the_layers():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    assert Path(lint).is_file(), "import-linter is missing: install the test extras (pip install -e '.[test]')"
    done = subprocess.run([lint, str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_package_holds_no_lab_notebook():
    """Run configs a user starts from are documented; one-off continuations, run logs, resume packs and experiment
    scripts live in experiments/ (its one README), and nothing installed refers to experiments/ or benchmarks/."""
    package = ROOT / "llm_codec"
    user_docs = "".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    for config in sorted((package / "training" / "configs").glob("*.yaml")):
        assert f"configs/{config.name}" in user_docs, f"{config.name} is installed but no user doc presents it"
    for path in package.rglob("*"):
        if path.suffix in {".py", ".md", ".yaml", ".json"}:
            text = path.read_text(encoding="utf-8")
            assert "experiments/" not in text and "benchmarks/" not in text, path
        assert not (path.suffix in {".safetensors", ".pt"} and "resume" in path.parts), path
    assert not list((ROOT / "scripts").glob("gpu_*")), "GPU-loan tooling belongs in experiments/"
    assert (ROOT / "experiments" / "README.md").is_file() and not list((ROOT / "experiments").rglob("*/README.md"))
