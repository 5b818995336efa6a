"""Converts an original LLM-Codec (`MSCodecLM`) checkpoint into a `save_pretrained` folder.

    llm-codec convert --checkpoint ckpt.pth --config config.yaml --layer1-words layer1.npy --output out/
    python -m llm_codec.conversion.convert_llm_codec_checkpoint  (same arguments)

The original file is read with `torch.load(weights_only=True)`; its `codec_model` state dict is renamed through an
ordered table that mirrors the original `nn.Sequential` layout, old-style weight norm (`weight_g`, `weight_v`) is
folded into plain weights, and every key must be used exactly once: missing or left-over keys are reported by name.
"""

import argparse
import itertools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoTokenizer

from .. import vocabulary
from ..configuration_llm_codec import LLMCodecConfig
from ..modeling_llm_codec import LLMCodecModel


CONFIG_ARGUMENTS = (
    "sample_rate",
    "encoder_dim",
    "encoder_rates",
    "latent_dim",
    "decoder_dim",
    "decoder_rates",
    "vq_strides",
    "attn_window_size",
    "noise",
    "depthwise",
    "use_cblinear",
)
# Original constructor arguments that only point at embedding files: the checkpoint holds the codebooks.
IGNORED_CONFIG_ARGUMENTS = ("local_embedding_path", "global_embedding_path", "codebook_size", "codebook_dim")
# Original keys that carry nothing to convert (recomputed on the fly).
DROPPED_KEY_PATTERN = re.compile(r"\.rel_pos\.inv_freq$")


class ConversionError(ValueError):
    """The original checkpoint or config cannot be converted; the message says why."""


def _residual_unit_renames(old: str, new: str) -> list[tuple[str, str]]:
    return [
        (f"{old}.block.0.", f"{new}.snake1."),
        (f"{old}.block.1.", f"{new}.conv1."),
        (f"{old}.block.2.", f"{new}.snake2."),
        (f"{old}.block.3.", f"{new}.conv2."),
    ]


def _attention_renames(old: str, new: str) -> list[tuple[str, str]]:
    return [(f"{old}.norm.", f"{new}.norm."), (f"{old}.to_qkv.", f"{new}.qkv_proj."), (f"{old}.to_out.", f"{new}.out_proj.")]


def rename_table(config: LLMCodecConfig) -> list[tuple[str, str]]:
    """
    Ordered `(original prefix, new prefix)` pairs. The original stores its encoder and decoder as `nn.Sequential`
    lists, so positions depend on the config (attention and noise blocks are optional); the table is written by
    walking that layout once, in order.
    """
    table = []
    # Encoder: conv, one block per rate, [attention], conv.
    position = itertools.count()
    table.append((f"encoder.block.{next(position)}.", "encoder.conv_in."))
    for i, _ in enumerate(config.encoder_rates):
        old, new = f"encoder.block.{next(position)}", f"encoder.blocks.{i}"
        for unit in range(3):
            table += _residual_unit_renames(f"{old}.block.{unit}", f"{new}.res_unit{unit + 1}")
        table += [(f"{old}.block.3.", f"{new}.snake."), (f"{old}.block.4.", f"{new}.conv.")]
    if config.attn_window_size is not None:
        table += _attention_renames(f"encoder.block.{next(position)}", "encoder.attention")
    table.append((f"encoder.block.{next(position)}.", "encoder.conv_out."))
    # Quantizer.
    for k in range(len(config.vq_strides)):
        old, new = f"quantizer.quantizers.{k}", f"quantizer.layers.{k}"
        table += [
            (f"{old}.codebook.weight", f"{new}.codebook"),
            (f"{old}.cb_proj.", f"{new}.codebook_proj."),
            (f"{old}.in_proj.", f"{new}.in_proj."),
            (f"{old}.out_proj.", f"{new}.out_proj."),
        ]
    # Decoder: [depthwise conv], conv, [attention], one block per rate, snake, conv, tanh.
    position = itertools.count()
    if config.depthwise:
        table.append((f"decoder.model.{next(position)}.", "decoder.conv_in_depthwise."))
    table.append((f"decoder.model.{next(position)}.", "decoder.conv_in."))
    if config.attn_window_size is not None:
        table += _attention_renames(f"decoder.model.{next(position)}", "decoder.attention")
    for i, _ in enumerate(config.decoder_rates):
        old, new = f"decoder.model.{next(position)}", f"decoder.blocks.{i}"
        inner = itertools.count()
        table += [(f"{old}.block.{next(inner)}.", f"{new}.snake."), (f"{old}.block.{next(inner)}.", f"{new}.conv_t.")]
        if config.noise:
            table.append((f"{old}.block.{next(inner)}.linear.", f"{new}.noise.conv."))
        for unit in range(3):
            table += _residual_unit_renames(f"{old}.block.{next(inner)}", f"{new}.res_unit{unit + 1}")
    table.append((f"decoder.model.{next(position)}.", "decoder.snake_out."))
    table.append((f"decoder.model.{next(position)}.", "decoder.conv_out."))
    return table


def fold_weight_norm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replaces every `X.weight_g` / `X.weight_v` pair by `X.weight = g * v / ||v||` (norm over all but dim 0)."""
    folded = {}
    for key, value in state_dict.items():
        if key.endswith(".weight_g"):
            continue
        if key.endswith(".weight_v"):
            stem = key[: -len(".weight_v")]
            if f"{stem}.weight_g" not in state_dict:
                raise ConversionError(f"`{key}` has no matching `{stem}.weight_g`: the checkpoint is incomplete.")
            g = state_dict[f"{stem}.weight_g"].float()
            v = value.float()
            norm = v.pow(2).sum(dim=tuple(range(1, v.dim())), keepdim=True).sqrt()
            folded[f"{stem}.weight"] = g * v / norm
        else:
            folded[key] = value
    orphans = [k for k in state_dict if k.endswith(".weight_g") and k[: -len("_g")] + "_v" not in state_dict]
    if orphans:
        raise ConversionError(f"Weight-norm magnitudes without directions: {orphans}.")
    return folded


def rename_state_dict(state_dict: dict[str, torch.Tensor], config: LLMCodecConfig) -> dict[str, torch.Tensor]:
    """Original key names -> `LLMCodecModel` key names (first matching prefix of `rename_table` wins)."""
    table = rename_table(config)
    renamed, unmatched = {}, []
    for key, value in state_dict.items():
        if DROPPED_KEY_PATTERN.search(key):
            continue
        for old, new in table:
            if key.startswith(old) or key == old:
                renamed[new + key[len(old) :]] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise ConversionError(
            f"{len(unmatched)} checkpoint key(s) do not belong to an LLM-Codec with this config: {unmatched[:10]}"
            f"{' ...' if len(unmatched) > 10 else ''}. Check that --config matches the checkpoint."
        )
    return renamed


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads the original `.pth` safely (`weights_only=True`) and returns its `codec_model` state dict."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # pickle refused by the weights-only unpickler, or a damaged file
        raise ConversionError(
            f"Could not read {path} as a weights-only checkpoint ({type(error).__name__}: {error}). Only plain tensor "
            "checkpoints are accepted; arbitrary pickles are refused for safety."
        ) from error
    if isinstance(checkpoint, dict) and "codec_model" in checkpoint:
        checkpoint = checkpoint["codec_model"]
    elif isinstance(checkpoint, dict) and "generator" in checkpoint:
        checkpoint = checkpoint["generator"]
    if not isinstance(checkpoint, dict) or not all(torch.is_tensor(v) for v in checkpoint.values()):
        raise ConversionError(f"{path} holds no `codec_model` state dict of tensors.")
    return checkpoint


def load_original_config(path: str | Path) -> dict:
    """Reads the original config (YAML or JSON, whole file or its `generator` section) -> constructor arguments."""
    path = Path(path)
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)  # safe: a `!!python` tag is refused, never run
        else:
            data = json.loads(text)
    except Exception as error:  # yaml.YAMLError (a tag safe_load refuses, bad syntax) or json.JSONDecodeError
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(f"--config {path} cannot be read as {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}"
                              f" ({first_line}): give the original config.yaml or its `generator` section.") from None
    for section in ("generator", "config"):
        if isinstance(data, dict) and isinstance(data.get(section), dict):
            data = data[section]
    if not isinstance(data, dict):
        raise ConversionError(f"--config {path} holds a {type(data).__name__}, not a mapping of the original "
                              "constructor arguments (the `generator` section of config.yaml).")
    unknown = set(data) - set(CONFIG_ARGUMENTS) - set(IGNORED_CONFIG_ARGUMENTS)
    if unknown:
        raise ConversionError(f"Unknown original config arguments {sorted(unknown)} in {path}.")
    return {k: data[k] for k in CONFIG_ARGUMENTS if k in data}


def load_word_list(path: str | Path) -> list[str]:
    """Layer-1 words from a `.npy` array (as released) or a JSON list / {index: word} mapping."""
    path = Path(path)
    if path.suffix == ".npy":
        words = np.load(path, allow_pickle=False)
        return [str(w) for w in words.tolist()]
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        return [data[str(i)] if str(i) in data else data[i] for i in range(len(data))]
    return [str(w) for w in data]


def convert_checkpoint(
    checkpoint_path: str | Path,
    config_path: str | Path,
    layer1_words_path: str | Path | None = None,
    tokenizer_path: str | None = None,
    llm_name_or_path: str | None = None,
) -> LLMCodecModel:
    """
    Builds an `LLMCodecModel` holding the original checkpoint's weights.

    Codebook sizes and width are read from the checkpoint (releases differ: 3248 or 32000 layer-1 entries). With
    `tokenizer_path`, the LLM vocabulary is recorded in the config (name and fingerprint) and checked against the
    layer-2/3 codebook sizes.
    """
    state_dict = load_original_checkpoint(checkpoint_path)
    arguments = load_original_config(config_path)
    codebook_keys = sorted(k for k in state_dict if re.fullmatch(r"quantizer\.quantizers\.\d+\.codebook\.weight", k))
    if len(codebook_keys) != len(arguments.get("vq_strides", [4, 2, 1])):
        raise ConversionError(
            f"The checkpoint has {len(codebook_keys)} codebooks but the config has "
            f"{len(arguments.get('vq_strides', [4, 2, 1]))} VQ layers."
        )
    codebooks = [state_dict[f"quantizer.quantizers.{k}.codebook.weight"] for k in range(len(codebook_keys))]
    arguments["codebook_sizes"] = [int(c.shape[0]) for c in codebooks]
    arguments["codebook_dim"] = int(codebooks[0].shape[1])
    if layer1_words_path is not None:
        arguments["layer1_words"] = load_word_list(layer1_words_path)
    if tokenizer_path is not None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        arguments["llm_name_or_path"] = llm_name_or_path or str(tokenizer_path)
        arguments["llm_vocab_size"] = len(tokenizer)
        arguments["llm_vocab_fingerprint"] = vocabulary.vocabulary_fingerprint(tokenizer)
    elif llm_name_or_path is not None:
        arguments["llm_name_or_path"] = llm_name_or_path
    config = LLMCodecConfig(**arguments)
    new_state_dict = rename_state_dict(fold_weight_norm(state_dict), config)

    model = LLMCodecModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(new_state_dict))
    unexpected = sorted(set(new_state_dict) - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"Checkpoint and model disagree. Missing from the checkpoint: {missing[:10]}; left over in the "
            f"checkpoint: {unexpected[:10]}. Check that --config matches the checkpoint."
        )
    wrong_shape = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in new_state_dict.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong_shape:
        raise ConversionError(f"Shape mismatch: {wrong_shape[:10]}. Check that --config matches the checkpoint.")
    model.load_state_dict({k: v.float() for k, v in new_state_dict.items()}, strict=True)
    bad = model.non_finite_tensors()
    if bad:
        raise ConversionError(
            f"The converted weights hold NaN or infinite values in {bad[:10]}: the checkpoint is damaged (NaN "
            "weights, or a weight-norm `weight_v` of all zeros). Convert an intact checkpoint."
        )
    model.eval()
    return model


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="original .pth (with a `codec_model` state dict)")
    parser.add_argument("--config", required=True, help="original config.yaml or its JSON `generator` section")
    parser.add_argument("--layer1-words", default=None, help="layer-1 word list (.npy as released, or .json)")
    parser.add_argument("--output", required=True, help="folder to write (save_pretrained layout, with the feature "
                        "extractor's preprocessor_config.json and a model card)")
    parser.add_argument("--tokenizer", default=None, help="local path of the LLM tokenizer the codebooks came from")
    parser.add_argument("--llm-name", default=None, help="name of that LLM to record (e.g. meta-llama/Llama-2-7b-hf)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing, non-empty --output folder (its old files are removed, not mixed in)")
    return parser


def check_output_dir(output_dir, inputs=(), overwrite: bool = False) -> Path:
    """
    Checks `--output` before converting: a non-empty folder is refused unless `overwrite`, and never when it holds
    one of the `inputs` (replacing it would delete them). Returns the folder as a `Path`.
    """
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ConversionError(f"--output {out} is a file: give a folder.")
    if out.is_dir() and any(out.iterdir()):
        inside = [str(i) for i in inputs if i is not None and Path(i).resolve().is_relative_to(out.resolve())]
        if inside:
            raise ConversionError(f"--output {out} holds the input(s) {inside}: choose another folder.")
        if not overwrite:
            raise ConversionError(f"--output {out} is not empty; pass --overwrite to replace it (its files are "
                                  "removed), or choose another folder.")
    return out


def write_output_dir(model, output_dir: Path) -> None:
    """`model.save_pretrained` into a temporary sibling folder, which then replaces `output_dir` (no stale files are
    left from an earlier conversion, and an interrupted run leaves the old folder whole)."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        model.save_pretrained(tmp)
        if output_dir.exists():
            old = tmp.with_name(tmp.name + "-old")
            os.rename(output_dir, old)
            os.rename(tmp, output_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    output_dir = check_output_dir(args.output, [args.checkpoint, args.config, args.layer1_words, args.tokenizer],
                                  args.overwrite)
    model = convert_checkpoint(
        args.checkpoint, args.config, args.layer1_words, tokenizer_path=args.tokenizer, llm_name_or_path=args.llm_name
    )
    write_output_dir(model, output_dir)
    config = model.config
    print(
        f"Converted {args.checkpoint} -> {args.output}: codebooks {config.codebook_sizes} x {config.codebook_dim}, "
        f"{config.bitrate:.1f} bit/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
