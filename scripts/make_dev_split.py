"""
Carves a development set out of the training split, for choosing checkpoints without touching the held-out test
split: `data/dev_speech.jsonl` (seeded, at least 3 s long, 4 speech clips of each training source) and
`data/codec_train_nodev.jsonl` (the training manifest without them).

    python scripts/make_dev_split.py [--data data] [--per-source 4] [--seed 0]
"""

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--data", default="data", help="folder holding codec_train.jsonl")
    parser.add_argument("--per-source", type=int, default=4, help="dev clips per speech source")
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    folder = Path(args.data)
    rows = [json.loads(line) for line in (folder / "codec_train.jsonl").read_text().splitlines() if line.strip()]
    rng = random.Random(args.seed)
    by_source: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        if row.get("kind") == "speech" and float(row.get("duration", 0)) >= args.min_seconds:
            by_source.setdefault(row["source"], []).append(index)
    dev = sorted(i for source in sorted(by_source) for i in rng.sample(by_source[source],
                                                                        min(args.per_source, len(by_source[source]))))
    chosen = set(dev)
    (folder / "dev_speech.jsonl").write_text("".join(json.dumps(rows[i]) + "\n" for i in dev))
    (folder / "codec_train_nodev.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for i, row in enumerate(rows) if i not in chosen))
    print(f"dev: {len(dev)} clips from {len(by_source)} sources -> {folder / 'dev_speech.jsonl'}; "
          f"training: {len(rows) - len(dev)} clips -> {folder / 'codec_train_nodev.jsonl'}")


if __name__ == "__main__":
    main()
