"""Paired comparison of two systems of an `llm-codec evaluate codec` run, clip by clip.

    python benchmarks/compare_systems.py benchmarks/results_codec_heldout/results.json \
        --a llm-codec --b codec2-700C --metric pesq_wb

Prints the mean of the per-clip differences (a - b) over the clips both systems could score, its 95 % bootstrap
interval (10 000 resamples of the clips, seeded) and the share of clips on which a scores higher, overall and per
source (`llm-codec evaluate codec` prints the overall rows of this in its results.md), or with `--by duration` per
clip-length bucket (`--edges`, seconds). With `--b-results` system b comes from another run on the same clips, e.g.
the codec with and without `--refine-steps`:

    python benchmarks/compare_systems.py benchmarks/results_codec_dev_refine50/results.json \
        --a llm-codec-refine50 --b-results benchmarks/results_codec_dev/results.json --b llm-codec

Two means a few hundredths apart on 100 clips are often not a measured
difference; this says whether they are.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_codec.evaluation.statistics import paired_difference  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("results", help="results.json of `llm-codec evaluate codec`")
    parser.add_argument("--a", default="llm-codec", help="system name (default: llm-codec)")
    parser.add_argument("--b", default="codec2-700C", help="system name (default: codec2-700C)")
    parser.add_argument("--b-results", default=None,
                        help="results.json of another run on the same clips to take system b from (default: RESULTS)")
    parser.add_argument("--metric", default="pesq_wb", help="pesq_wb, stoi, mel_distance or si_sdr")
    parser.add_argument("--by", choices=("source", "duration"), default="source",
                        help="rows after the overall one: per source (default) or per clip-duration bucket")
    parser.add_argument("--edges", default="1.5,3,6",
                        help="with --by duration: bucket edges in seconds, comma-separated (default 1.5,3,6)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        edges = sorted(float(x) for x in args.edges.split(","))
    except ValueError:
        raise SystemExit(f"--edges must be numbers separated by commas, got {args.edges!r}") from None

    def per_clip(name: str, path: str) -> list[dict]:
        systems = {s["system"]: s for s in json.loads(Path(path).read_text())["systems"]}
        if name not in systems:
            raise SystemExit(f"no system {name!r} in {path}; it has: {', '.join(systems)}")
        return systems[name]["per_clip"]

    clips_a, clips_b = per_clip(args.a, args.results), per_clip(args.b, args.b_results or args.results)
    if [c["clip"] for c in clips_a] != [c["clip"] for c in clips_b]:
        raise SystemExit("the two systems were not scored on the same clips in the same order")

    buckets = [(low, high, f"{low:g}-{high:g} s") for low, high in zip([0.0] + edges, edges)]
    buckets.append((edges[-1], float("inf"), f">= {edges[-1]:g} s"))

    def group(clip) -> str:
        if args.by == "source":
            return clip["source"]
        if clip.get("duration_s") is None:
            raise SystemExit(f"clip {clip['clip']} has no duration (duration_s) in its results.json: use --by source")
        return next(label for low, high, label in buckets if low <= clip["duration_s"] < high)

    def column(clips, name=None):
        return np.array([c[args.metric] for c in clips if name is None or group(c) == name], dtype=float)

    print(f"Method: per-clip {args.metric} of {args.a} minus {args.b} on the clips both scored; mean, 95 % bootstrap "
          f"interval of the mean (10 000 resamples of clips, seed {args.seed}), share of clips where {args.a} is "
          f"higher. Data: {args.results}" + (f" and {args.b_results}." if args.b_results else "."))
    print(f"| clips | {'source' if args.by == 'source' else 'clip duration'} | mean difference | 95 % interval | "
          f"{args.a} higher |")
    print("| --- | --- | --- | --- | --- |")
    present = {group(c) for c in clips_a}
    groups = sorted(present) if args.by == "source" else [label for *_, label in buckets if label in present]
    for name in [None] + groups:
        d = paired_difference(column(clips_a, name), column(clips_b, name), seed=args.seed)
        print(f"| {d['clips']} | {name or 'all'} | {d['mean']:+.3f} | [{d['low']:+.3f}, {d['high']:+.3f}] | "
              f"{100 * d['higher']:.0f} % |")


if __name__ == "__main__":
    main()
