"""Builds the design-2 codec's first layer exactly as `design2_cpu.yaml`'s run fits it, and saves the codec.

1. Writes the fitting set the config names (`semantic_fit_data`): `data/semantic_fit_balanced.jsonl`, 300 clips of
   each kind (speech, instrument, drums) drawn with seed 0 from `data/codec_train_nodev.jsonl`, none of them in a
   few-shot task (`data/tasks/*`), so the 16 centroids split every kind of sound, not mostly speech.
2. Builds the shipped default codec with `semantic_teacher: resemblyzer` (`training.add_semantic_layer1`) and fits
   its centroids as the trainer does (`training.draw_fit_clips` + `training.fit_semantic_layer1`, first 8 s of each
   clip, the run's seed), then saves it.

The few-shot side of design 2 depends only on this layer (the words are the teacher's), so it can be measured
before, and independently of, the training of layers 2-3 and the decoder around it:

    python experiments/semantic_layer1/build_design2_codec.py --output runs/design2_layer1
    llm-codec evaluate fewshot --model runs/design2_layer1 --lm Qwen/Qwen2.5-Coder-1.5B-Instruct --audio-format text \\
        --data data/tasks/speaker_id --settings 2x1,3x3 --output ...

This is an experiment, not part of the package.
"""

import argparse
import json
import random
from pathlib import Path

from llm_codec.default_model import load_default_codec
from llm_codec.evaluation.fewshot import load_pool
from llm_codec.training import TrainingConfig, add_semantic_layer1, draw_fit_clips, fit_semantic_layer1, resolve_sources

PER_KIND = 300


def write_balanced_fit_manifest(source: Path, destination: Path) -> None:
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    task_clips = {str(Path(s).resolve()) for task in sorted(Path("data/tasks").iterdir()) if task.is_dir()
                  for s in load_pool(task).sources}
    rows = [r for r in rows if str((source.parent / r["path"]).resolve()) not in task_clips]
    random.Random(0).shuffle(rows)
    chosen = [r for kind in sorted({r["kind"] for r in rows}) for r in [r for r in rows if r["kind"] == kind][:PER_KIND]]
    destination.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    print(f"{destination}: {len(chosen)} clips, {PER_KIND} per kind at most")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/semantic_layer1/design2_cpu.yaml")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    config = TrainingConfig.from_file(args.config)
    write_balanced_fit_manifest(Path(config.train_data), Path(config.semantic_fit_data))
    codec, _, _ = load_default_codec()
    codec = add_semantic_layer1(codec, config.semantic_teacher, config.semantic_clusters)
    sources = resolve_sources(config.semantic_fit_data, config.audio_column, config.path_column)
    stats = fit_semantic_layer1(codec, draw_fit_clips(sources, config.semantic_fit_clips, config.seed), seed=config.seed)
    print(json.dumps({**stats, "words": [codec.config.layer1_words[i] for i in stats["word_codes"]]}))
    codec.save_pretrained(args.output)


if __name__ == "__main__":
    main()
