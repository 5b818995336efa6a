"""
Makes the working tree small enough to travel to a lent GPU machine with `.gpu_bundle` (at most 64 MiB together),
and puts everything back afterwards.

    python experiments/gpu/gpu_travel.py hide [--with-discriminator]   # before the device call (carry: .gpu_bundle)
    python experiments/gpu/gpu_travel.py restore                       # right after it

`hide` moves out of the tree (to `--hold`, /tmp/llm_codec_gpu_hold) the tracked files the GPU run does not read: the
benchmark results and plots, the experiments' logs and results (their scripts and configs travel), the shipped weights (training continues from `experiments/default_codec/training/resume`)
and, unless `--with-discriminator`, the resume pack's discriminator. If the tree is still over the limit it also
moves bundle audio files out: instrument notes and drum hits first (the quality target is speech), then speech, each
the last in `audio_index.json` first (`experiments/gpu/gpu_train.py` skips missing audio).
`restore` moves every file back and checks with `git status` that no tracked file is missing.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NON_SPEECH = ("fluid-soundfont-gm", "hydrogen-drumkits")  # bundle audio of instrument notes and drum hits
RESUME = "experiments/default_codec/training/resume/"


def git_paths(*args: str) -> list[str]:
    """The paths a `git ls-files`-style command lists (NUL-separated, so names with spaces survive)."""
    out = subprocess.run(["git", *args, "-z"], cwd=ROOT, check=True, capture_output=True).stdout.decode()
    return [p for p in out.split("\0") if p]


def travelling_bytes(bundle: Path) -> int:
    """Bytes of tracked + untracked-not-ignored files present in the tree, plus the carried bundle."""
    listed = git_paths("ls-files", "--cached", "--others", "--exclude-standard")
    tree = sum((ROOT / p).stat().st_size for p in set(listed) if (ROOT / p).is_file())
    return tree + sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())


def move(relative: str, hold: Path) -> None:
    target = hold / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(ROOT / relative), str(target))


def hide(bundle: Path, hold: Path, limit: float, with_discriminator: bool) -> None:
    if hold.exists() and any(f.is_file() for f in hold.rglob("*")):
        sys.exit(f"{hold} still holds files of an earlier `hide`: run `restore` first")
    tracked = git_paths("ls-files")
    hidden = [p for p in tracked if (ROOT / p).is_file() and (
        p.startswith("benchmarks/")
        or (p.startswith("experiments/") and not p.startswith(RESUME) and not p.endswith((".py", ".sh", ".yaml")))
        or p.endswith("weights_without_codebooks.safetensors")
        or (p == RESUME + "discriminator.safetensors" and not with_discriminator))]
    for p in hidden:
        move(p, hold)
    index = json.loads((bundle / "audio_index.json").read_text())
    dropped, size = [], travelling_bytes(bundle)
    # sorted() is stable: non-speech files first, each group from the end of the index
    for entry in sorted(reversed(index), key=lambda e: not Path(e["file"]).name.startswith(NON_SPEECH)):
        if size <= limit:
            break
        audio = bundle / entry["file"]
        if audio.is_file():
            size -= audio.stat().st_size
            move(str(audio.relative_to(ROOT)), hold)
            dropped.append(entry["file"])
    print(f"hid {len(hidden)} tracked files; bundle audio left behind: {dropped or 'none'}; "
          f"travelling: {size / 2**20:.1f} MiB")
    if size > limit:
        sys.exit("still over the limit: make a smaller bundle (experiments/gpu/gpu_bundle.py --speech-minutes ...)")


def restore(hold: Path) -> None:
    for held in sorted(f for f in hold.rglob("*") if f.is_file()):
        target = ROOT / held.relative_to(hold)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(held), str(target))
    missing = git_paths("ls-files", "--deleted")
    if missing:
        sys.exit(f"tracked files still missing: {missing[:5]}")
    print("restored")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("action", choices=["hide", "restore"])
    parser.add_argument("--bundle", default=str(ROOT / ".gpu_bundle"))
    parser.add_argument("--with-discriminator", action="store_true",
                        help="keep the resume pack's discriminator (runs with the adversarial losses on)")
    parser.add_argument("--hold", default="/tmp/llm_codec_gpu_hold", help="where hidden files wait")
    parser.add_argument("--limit-mib", type=float, default=63.5,
                        help="the device's 64 MiB, less a margin for files written before the call")
    args = parser.parse_args(argv)
    if args.action == "hide":
        hide(Path(args.bundle).resolve(), Path(args.hold), args.limit_mib * 2**20, args.with_discriminator)
    else:
        restore(Path(args.hold))


if __name__ == "__main__":
    main()
