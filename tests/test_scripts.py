"""The developer scripts under scripts/ that other docs rely on: training-log plots and GPU-call packing."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _log(path: Path, steps: range, stoi: float) -> None:
    rows = [{"type": "train", "step": s, "mel": 2.0 - s / 1e4, "commitment": 0.3, "consistency": 0.1} for s in steps]
    rows.append({"type": "eval", "step": steps[-1], "stoi": stoi, "pesq_wb": None})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_plot_training_log_reads_a_run_continued_in_another_log(tmp_path):
    first, second, png = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "curves.png"
    _log(first, range(100, 1001, 100), 0.70)
    _log(second, range(1100, 2001, 100), 0.72)
    done = subprocess.run([sys.executable, str(SCRIPTS / "plot_training_log.py"), str(first), str(second), str(png)],
                          capture_output=True, text=True, check=True)
    assert "20 training records, 2 evaluations" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_gpu_travel_hides_what_the_gpu_run_does_not_read_and_restores_it(tmp_path):
    repo, hold = tmp_path / "repo", tmp_path / "hold"
    mib = b"\0" * 2**20
    files = {
        "scripts/gpu_travel.py": (SCRIPTS / "gpu_travel.py").read_bytes(),
        "llm_codec/code.py": b"x = 1\n",
        "llm_codec/assets/default_codec/weights_without_codebooks.safetensors": mib,
        "benchmarks/results/plot.png": mib,
        "benchmarks/default_codec_training/resume/model.safetensors": mib,
        "benchmarks/default_codec_training/resume/discriminator.safetensors": mib,
    }
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    (repo / ".gitignore").write_text(".gpu_bundle/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    bundle = repo / ".gpu_bundle"
    (bundle / "audio").mkdir(parents=True)
    index = [{"file": f"audio/{i}.opus"} for i in range(3)]
    (bundle / "audio_index.json").write_text(json.dumps(index))
    for entry in index:
        (bundle / entry["file"]).write_bytes(mib)

    def travel(*args):
        return subprocess.run([sys.executable, str(repo / "scripts/gpu_travel.py"), *args, "--hold", str(hold)],
                              capture_output=True, text=True)

    # 1 MiB resume model + 3 MiB audio + small files must fit in 3.5 MiB: one audio file, the last, stays behind
    done = travel("hide", "--limit-mib", "3.5")
    assert done.returncode == 0, done.stderr
    assert "audio/2.opus" in done.stdout
    assert not (repo / "benchmarks/results/plot.png").exists()
    assert not (repo / "llm_codec/assets/default_codec/weights_without_codebooks.safetensors").exists()
    assert not (repo / "benchmarks/default_codec_training/resume/discriminator.safetensors").exists()
    assert (repo / "benchmarks/default_codec_training/resume/model.safetensors").exists()
    assert (repo / "llm_codec/code.py").exists() and (bundle / "audio/1.opus").exists()
    assert "still holds" in travel("hide").stderr  # a second hide before restore would lose track of the first

    done = travel("restore")
    assert done.returncode == 0, done.stderr
    assert _git(repo, "status", "--porcelain") == ""
    assert sorted(p.name for p in (bundle / "audio").iterdir()) == ["0.opus", "1.opus", "2.opus"]

    too_small = travel("hide", "--limit-mib", "0.5")
    assert too_small.returncode != 0 and "still over the limit" in too_small.stderr
    assert travel("restore").returncode == 0 and _git(repo, "status", "--porcelain") == ""
