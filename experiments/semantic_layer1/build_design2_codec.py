"""Builds the design-2 codec's first layer exactly as `design2_cpu.yaml`'s run fits it, and saves the codec.

The shipped default codec with `semantic_teacher: resemblyzer` (`training.add_semantic_layer1`), its 16 centroids
fitted by `training.fit_semantic_layer1` on the same 900 training clips the trainer draws (the clips of
`data/codec_train_nodev.jsonl` shuffled with the run's seed 0, first 8 s of each). The few-shot side of design 2
depends only on this layer (the words are the teacher's), so it can be measured before, and independently of, the
training of layers 2-3 and the decoder around it:

    python experiments/semantic_layer1/build_design2_codec.py --output runs/design2_layer1
    llm-codec evaluate fewshot --model runs/design2_layer1 --lm Qwen/Qwen2.5-Coder-1.5B-Instruct --audio-format text \\
        --collapse-repeats --data data/tasks/speaker_id --settings 2x1,3x3 --output ...

This is an experiment, not part of the package.
"""

import argparse
import json
import random

from llm_codec.default_model import load_default_codec
from llm_codec.training import TrainingConfig, add_semantic_layer1, fit_semantic_layer1, resolve_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/semantic_layer1/design2_cpu.yaml")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    config = TrainingConfig.from_file(args.config)
    codec, trained, _ = load_default_codec()
    codec = add_semantic_layer1(codec, config.semantic_teacher, config.semantic_clusters)
    sources = resolve_sources(config.train_data, config.audio_column, config.path_column)
    order = list(range(len(sources)))
    random.Random(config.seed).shuffle(order)  # the trainer's draw (Trainer._fit_semantic_layer1)
    stats = fit_semantic_layer1(codec, [sources[i] for i in order[: config.semantic_fit_clips]], seed=config.seed)
    words = [codec.config.layer1_words[i] for i in stats["word_codes"]]
    print(json.dumps({**stats, "words": words}))
    codec.save_pretrained(args.output)


if __name__ == "__main__":
    main()
