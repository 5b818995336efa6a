"""Command line of codec training: `python -m llm_codec.training ...` (also `accelerate launch -m llm_codec.training
...`), and `add_train_subparser` for the package CLI (`llm-codec train ...`)."""

from __future__ import annotations

import argparse
import logging
import sys


def _add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", default=None,
                        help="training config (.yaml/.json; see llm_codec/training/configs/cpu_small.yaml)")
    parser.add_argument("--data", default=None,
                        help="training audio: folder (recursive wav/flac/ogg), JSONL/CSV manifest with a `path` column, or one file")
    parser.add_argument("--val-data", default=None, help="held-out audio (default: clips held out of --data)")
    parser.add_argument("--output", default=None, help="folder where checkpoints, logs and the model go")
    parser.add_argument("--resume", action="store_true", help="continue from <output>/checkpoints/latest")
    parser.add_argument("--max-steps", type=int, default=None, help="total number of training steps")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size per process")
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None)
    parser.add_argument("--lm", default=None, help="'default' (offline SmolLM2-135M) or a local LM folder")
    parser.add_argument("--init-from", default=None,
                        help="start from a saved codec folder, or 'default' for the shipped default codec")
    parser.add_argument("--trainable", choices=("all", "decoder", "encoder"), default=None,
                        help="'decoder': fine-tune only the decoder (the codes of every clip stay unchanged); "
                             "'encoder': freeze the decoder, train the encoder and quantizer projections")
    parser.add_argument("--teacher", default=None,
                        help="consistency teacher: 'whisper', 'whisper:<ctranslate2 folder>', 'whisper-30s' or 'none'")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument("--log-with", nargs="+", default=None, metavar="TRACKER",
                        help="also log to accelerate experiment trackers: tensorboard, wandb, mlflow, comet_ml, aim, "
                             "clearml, dvclive, swanlab, trackio or all (several allowed; 'none' turns off the "
                             "config's); log.jsonl is always written")
    parser.add_argument("--tracker-project", default=None,
                        help="project name for the trackers (default 'llm_codec'; TensorBoard: <output>/<project>/)")
    return parser


def config_from_args(args: argparse.Namespace):
    """The `TrainingConfig` of parsed arguments: `--config` (or the defaults), with each option given replacing
    its field; options not given leave the config's value."""
    from .config import TrainingConfig

    config = TrainingConfig.from_file(args.config) if args.config else TrainingConfig()
    teacher = args.teacher
    options = dict(
        train_data=args.data,
        val_data=args.val_data,
        output_dir=args.output,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        mixed_precision=args.mixed_precision,
        lm=args.lm,
        init_from=args.init_from,
        trainable=args.trainable,
        progress=False if args.no_progress else None,
        log_with=args.log_with,
        tracker_project=args.tracker_project,
    )
    config = config.replace(**{k: v for k, v in options.items() if v is not None})
    if teacher is not None:
        config.consistency_teacher = None if teacher.lower() == "none" else teacher
    if config.train_data is None:
        raise ValueError("No training data: pass --data or set `train_data` in the config.")
    return config


def run_train(args: argparse.Namespace) -> int:
    """Runs training from parsed arguments; returns the exit status."""
    from .trainer import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    trainer = train(config, resume=bool(args.resume))
    trainer.accelerator.end_training()  # the end of the run: trackers already finished; frees the process group
    return 0


def add_train_subparser(subparsers) -> argparse.ArgumentParser:
    """
    Adds the `train` command to an `argparse` sub-parser collection (for `llm-codec train`); the parsed namespace
    gets `func=run_train`.
    """
    parser = subparsers.add_parser("train", help="train an LLM-Codec (accelerate; see llm_codec.training)",
                                   description=__doc__)
    _add_arguments(parser)
    parser.set_defaults(func=run_train)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m llm_codec.training`."""
    parser = argparse.ArgumentParser(prog="python -m llm_codec.training", description=__doc__)
    return _add_arguments(parser)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_train(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"llm_codec.training: error: {error}", file=sys.stderr)
        return 2


__all__ = ["add_train_subparser", "build_parser", "main", "run_train"]
