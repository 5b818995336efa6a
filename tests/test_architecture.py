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
