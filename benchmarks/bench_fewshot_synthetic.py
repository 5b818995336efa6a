"""How well does an LM learn from demonstrations of audio-like token sequences? A synthetic foreign-word task.

Method: each class is a random "foreign word", a sequence of --length layer-1 codec words drawn from the codec's
word list (what 1 s of audio looks like to the LM: about 8 words). A demonstration or query is that sequence with
each word replaced by a random word with probability --noise. Labels are common English words. Every episode draws
new classes and labels: N-way K-shot, one query per class; accuracy over --episodes episodes, with a 95 % Wilson
interval, for three methods of the audio-few-shot-classification pipeline working on the token ids directly:
label likelihood after the prompt (icl), the same calibrated against a content-free query, and embedding
prototypes (mean last-layer hidden state). The codec is not involved: this measures the LM.
"""

import argparse
import json
import sys
import time

import numpy as np
import torch

LABELS = ["apple", "river", "chair", "cloud", "horse", "lemon", "pencil", "garden", "window", "bottle"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--ways", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--length", type=int, default=8)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.25, 0.0])
    parser.add_argument("--lm", default=None, help="local folder of another causal LM (default: offline SmolLM2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)

    import llm_codec  # noqa: F401
    from transformers import pipeline

    from llm_codec.default_model import DEFAULT_CODEC_ARCH
    from llm_codec.evaluation.statistics import wilson_interval
    from llm_codec.language_model import load_language_model
    from llm_codec.modeling_llm_codec import LLMCodecModel

    print(__doc__)
    lm, tokenizer = load_language_model(args.lm)
    codec = LLMCodecModel.from_language_model(lm, tokenizer, **DEFAULT_CODEC_ARCH)
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu")
    word_ids = pipe.codec_processor.tables()["word_ids"]
    print(f"LM: {lm.config._name_or_path}; {len(word_ids)} layer-1 words; {args.episodes} episodes per cell\n")
    rows = []
    for noise in args.noise:
        for ways in args.ways:
            for shots in args.shots:
                rng = np.random.default_rng(args.seed)
                correct = {"icl": 0, "calibrated": 0, "embedding": 0}
                total = 0
                start = time.perf_counter()
                for _ in range(args.episodes):
                    classes = [rng.integers(0, len(word_ids), args.length) for _ in range(ways)]
                    labels = list(rng.choice(LABELS, ways, replace=False))

                    def sample(c):
                        seq = classes[c].copy()
                        flip = rng.random(args.length) < noise
                        seq[flip] = rng.integers(0, len(word_ids), int(flip.sum()))
                        return [t for w in seq for t in word_ids[w]]

                    demos = [(sample(c), labels[c]) for _ in range(shots) for c in range(ways)]
                    order = rng.permutation(len(demos))
                    demos = [demos[i] for i in order]
                    queries = [sample(c) for c in range(ways)]
                    prefix = pipe.build_prefix([d for d, _ in demos], [l for _, l in demos], labels)
                    scores = pipe.score_labels(prefix, queries, labels, batch_size=ways)
                    content_free = pipe.tokenizer("N/A", add_special_tokens=False)["input_ids"]
                    baseline = pipe.score_labels(prefix, [content_free], labels, batch_size=1)[0]
                    prototypes = pipe._prototypes([d for d, _ in demos], [l for _, l in demos], labels, ways)
                    embedding = pipe._prototype_scores(queries, prototypes)
                    for c in range(ways):
                        correct["icl"] += int(scores[c].argmax() == c)
                        correct["calibrated"] += int((scores[c] - baseline).argmax() == c)
                        correct["embedding"] += int(embedding[c].argmax() == c)
                    total += ways
                elapsed = time.perf_counter() - start
                row = {"noise": noise, "ways": ways, "shots": shots, "queries": total, "chance": 1 / ways, "seconds": elapsed}
                for method, value in correct.items():
                    low, high = wilson_interval(value, total)
                    row[method] = {"accuracy": value / total, "ci95": [low, high]}
                rows.append(row)
                print(
                    f"noise {noise:.2f} {ways}-way {shots}-shot: "
                    + ", ".join(f"{m} {row[m]['accuracy']:.2f} [{row[m]['ci95'][0]:.2f}-{row[m]['ci95'][1]:.2f}]" for m in correct)
                    + f" (chance {1 / ways:.2f}; {elapsed:.0f} s)",
                    flush=True,
                )
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"lm": lm.config._name_or_path, "episodes": args.episodes, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
