"""Paired comparison of two systems of an `llm-codec evaluate codec` run, clip by clip.

    python benchmarks/compare_systems.py benchmarks/results_codec_heldout/results.json \
        --a llm-codec --b codec2-700C --metric pesq_wb

Prints the mean of the per-clip differences (a - b) over the clips both systems could score, its 95 % bootstrap
interval (10 000 resamples of the clips, seeded) and the share of clips on which a scores higher, overall and per
source (`llm-codec evaluate codec` prints the overall rows of this in its results.md). Two means a few hundredths
apart on 100 clips are often not a measured difference; this says whether they are.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_codec.evaluation.codec_quality import paired_difference  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("results", help="results.json of `llm-codec evaluate codec`")
    parser.add_argument("--a", default="llm-codec", help="system name (default: llm-codec)")
    parser.add_argument("--b", default="codec2-700C", help="system name (default: codec2-700C)")
    parser.add_argument("--metric", default="pesq_wb", help="pesq_wb, stoi, mel_distance or si_sdr")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    results = json.loads(Path(args.results).read_text())
    systems = {s["system"]: s for s in results["systems"]}
    for name in (args.a, args.b):
        if name not in systems:
            raise SystemExit(f"no system {name!r} in {args.results}; it has: {', '.join(systems)}")
    clips_a, clips_b = systems[args.a]["per_clip"], systems[args.b]["per_clip"]
    if [c["clip"] for c in clips_a] != [c["clip"] for c in clips_b]:
        raise SystemExit("the two systems were not scored on the same clips in the same order")

    def column(clips, source=None):
        return np.array([c[args.metric] for c in clips if source is None or c["source"] == source], dtype=float)

    print(f"Method: per-clip {args.metric} of {args.a} minus {args.b} on the clips both scored; mean, 95 % bootstrap "
          f"interval of the mean (10 000 resamples of clips, seed {args.seed}), share of clips where {args.a} is "
          f"higher. Data: {args.results}.")
    print(f"| clips | source | mean difference | 95 % interval | {args.a} higher |")
    print("| --- | --- | --- | --- | --- |")
    sources = [None] + sorted({c["source"] for c in clips_a})
    for source in sources:
        d = paired_difference(column(clips_a, source), column(clips_b, source), seed=args.seed)
        print(f"| {d['clips']} | {source or 'all'} | {d['mean']:+.3f} | [{d['low']:+.3f}, {d['high']:+.3f}] | "
              f"{100 * d['higher']:.0f} % |")


if __name__ == "__main__":
    main()
