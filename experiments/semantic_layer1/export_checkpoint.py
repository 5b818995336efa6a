"""Exports a training checkpoint of a run as a codec folder (`save_pretrained`, weight norm folded), to evaluate a
run that is still going or was stopped between its exports:

    python experiments/semantic_layer1/export_checkpoint.py --config experiments/semantic_layer1/design2_cpu.yaml \\
        --checkpoint runs/semantic_design2_cpu/checkpoints/step_00002000 --output runs/design2_step2000

This is an experiment, not part of the package.
"""

import argparse

from llm_codec.training import Trainer, TrainingConfig, export_codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    trainer = Trainer(TrainingConfig.from_file(args.config))
    trainer.load_checkpoint(args.checkpoint)
    print(f"step {trainer.step} -> {export_codec(trainer.codec, args.output)}")


if __name__ == "__main__":
    main()
