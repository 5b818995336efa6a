"""Plots training `log.jsonl` files (mel loss, VQ losses, validation STOI / PESQ-WB against the step) to a PNG.

    python scripts/plot_training_log.py experiments/default_codec/training/log.jsonl \
        experiments/default_codec/training/gpu_anneal/anneal_stft.log.jsonl experiments/default_codec/training/curves.png

Several logs are read in order as one run (a run continued in another folder); a dashed line marks where each
continuation starts.
"""

import argparse
import json
import math
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", metavar="log", help="log.jsonl files of one run, in order")
    parser.add_argument("png")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records, starts = [], []
    for log in args.logs:
        part = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
        if records and part:
            starts.append(part[0]["step"])
        records += part
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["mel"] for r in train])
    axes[0].set(title="multi-scale mel loss (training batches)", xlabel="step", yscale="log")
    for name in ("commitment", "consistency"):
        axes[1].plot(steps, [r.get(name, math.nan) for r in train], label=name)
    axes[1].set(title="VQ commitment and Whisper consistency losses", xlabel="step")
    axes[1].legend()
    for name in ("stoi", "pesq_wb"):
        values = [(r["step"], r.get(name)) for r in evals if r.get(name) is not None]
        if values:
            axes[2].plot(*zip(*values), "o-", label=name)
    axes[2].set(title="validation clips", xlabel="step")
    axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
        for step in starts:
            ax.axvline(step, color="gray", linestyle="--", linewidth=1)
    figure.tight_layout()
    figure.savefig(args.png, dpi=110)
    print(f"wrote {args.png} ({len(train)} training records, {len(evals)} evaluations)")


if __name__ == "__main__":
    main()
