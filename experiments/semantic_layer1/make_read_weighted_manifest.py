"""Writes a training manifest in which the read speech (the telephony prompts of the asterisk-core-sounds-* sources)
appears `--repeat` times, so that random crops draw it that much more often:

    python experiments/semantic_layer1/make_read_weighted_manifest.py --repeat 3 \\
        --input data/codec_train_nodev.jsonl --output data/codec_train_nodev_read3.jsonl

(For `grouped_stoi_read_cpu.yaml`.) This is an experiment, not part of the package.
"""

import argparse
import collections
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default="data/codec_train_nodev.jsonl")
    parser.add_argument("--output", default="data/codec_train_nodev_read3.jsonl")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prefix", default="asterisk-core-sounds-", help="sources whose rows are repeated")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    rows = [json.loads(line) for line in open(args.input)]
    counts = collections.Counter()
    with open(args.output, "w") as out:
        for row in rows:
            times = args.repeat if row.get("source", "").startswith(args.prefix) else 1
            counts["read" if times > 1 else "other"] += times
            out.write((json.dumps(row) + "\n") * times)
    total = sum(counts.values())
    print(f"{args.output}: {total} rows, read speech {counts['read']} ({counts['read'] / total:.0%})")


if __name__ == "__main__":
    main()
