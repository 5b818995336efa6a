"""`llm-codec` command line: convert original checkpoints, encode audio to LLM-vocabulary codes, decode, reconstruct."""

import argparse
import json
import sys
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoTokenizer

from . import __version__
from .audio_io import atomic_write, check_output, check_output_folder, load_audio, save_audio
from .conversion.convert_llm_codec_checkpoint import build_parser as convert_parser
from .conversion.convert_llm_codec_checkpoint import main as convert_main
from .demo import run_demo
from .evaluation.codec_cli import MODEL_HELP, REFINE_STEPS_HELP, load_codec, non_negative_int
from .evaluation.codec_cli import add_parsers as add_codec_parsers
from .evaluation.fewshot_cli import add_model_arguments
from .evaluation.fewshot_cli import add_parsers as add_fewshot_parsers
from .evaluation.fewshot_cli import load_models
from .feature_extraction_llm_codec import LLMCodecFeatureExtractor
from .language_model import DEFAULT_LM_NAME, load_language_model
from .processing_llm_codec import LLMCodecProcessor
from .refinement import refine_codes


def _load_model(path: str | None):
    """
    `(codec, tokenizer or None)`: the codec of a save_pretrained folder or Hugging Face Hub id, or (`path=None`) the
    embedded default codec with the tokenizer of the LM it was loaded with.
    """
    codec, _, tokenizer = load_codec(path)
    return codec, tokenizer


def _load_processor(model, lm_path: str | None, required: bool = True, separator: str | None = None, tokenizer=None):
    """
    An `LLMCodecProcessor` for `model` with the tokenizer of the LM folder `lm_path`, else `tokenizer` (already
    loaded with the codec), else that of the offline default LM when the codec was built for it; otherwise an
    error (`required`) or `None`.
    """
    if lm_path is not None:
        tokenizer = AutoTokenizer.from_pretrained(lm_path)
    elif tokenizer is None:
        if model.config.llm_name_or_path == DEFAULT_LM_NAME:
            tokenizer = load_language_model()[1]
        elif required:
            raise ValueError(f"LLM tokens need the tokenizer of {model.config.llm_name_or_path}: pass --lm FOLDER.")
        else:
            return None
    return LLMCodecProcessor.from_codec(model, tokenizer, **({"separator": separator} if separator else {}))


def _encode_file(model, audio_path: str, refine_steps: int = 0, progress: bool = True):
    """Codes of an audio file (any rate and channels); `progress`: tqdm bars on standard error for long inputs."""
    samples, rate = load_audio(audio_path)
    features = LLMCodecFeatureExtractor(sampling_rate=model.config.sample_rate)
    inputs = features(samples, sampling_rate=rate, return_tensors="pt")
    if refine_steps:
        return refine_codes(model, **inputs, steps=refine_steps, progress=progress)
    return model.encode(**inputs, progress=progress)


def cmd_convert(args) -> int:
    argv = ["--checkpoint", args.checkpoint, "--config", args.config, "--output", args.output]
    for flag, value in (("--layer1-words", args.layer1_words), ("--tokenizer", args.tokenizer), ("--llm-name", args.llm_name)):
        if value is not None:
            argv += [flag, value]
    return convert_main(argv + (["--overwrite"] if args.overwrite else []))


def cmd_encode(args) -> int:
    if args.output:
        check_output(args.output, inputs=[args.audio], overwrite=args.overwrite, suffixes=(".json", ".txt"))
    model, tokenizer = _load_model(args.model)
    encoded = _encode_file(model, args.audio, args.refine_steps, progress=not args.quiet)
    layers = _parse_layers(args.layers) if args.layers else list(range(model.config.num_quantizers))
    for k in layers:
        if not 0 <= k < model.config.num_quantizers:
            raise ValueError(f"--layers: layer {k} does not exist (0..{model.config.num_quantizers - 1}).")
    processor = None
    if args.format != "codes":
        processor = _load_processor(model, args.lm, required=args.format == "text", separator=args.separator,
                                    tokenizer=tokenizer)
    if args.format == "text":
        text = processor.codes_to_text(encoded.audio_codes, layers=tuple(layers))[0]
    else:
        result = {"sampling_rate": model.config.sample_rate, "audio_length": int(encoded.audio_lengths[0]), "layers": {}}
        for k in layers:
            codes = encoded.audio_codes[k][0].tolist()
            entry = {"codes": codes}
            if k == 0 and model.config.layer1_words is not None:
                entry["words"] = [model.config.layer1_words[c] for c in codes]
            if k == 0 and processor is not None and processor.layer1_heads is not None:  # grouped layer-1 words
                entry["head_words"] = [model.config.layer1_words[c] for c in processor.read_layer1(codes)]
            if processor is not None:  # the ids an LM reads (for grouped layer-1 words: the heads')
                entry["token_ids"] = processor.codes_to_ids(encoded.audio_codes, layers=(k,))[0]
                if k > 0:
                    entry["tokens"] = processor.tokenizer.convert_ids_to_tokens(entry["token_ids"])
            result["layers"][str(k)] = entry
        if processor is not None and len(layers) == model.config.num_quantizers:
            result["generation_ids"] = processor.codes_to_ids(encoded.audio_codes, format="generation")[0]
        text = json.dumps(result, ensure_ascii=False)
    if args.output:
        atomic_write(args.output, lambda tmp: tmp.write_text(text))
    else:
        print(text)
    return 0


def _parse_layers(text: str) -> list[int]:
    """`--layers "0,2"` -> `[0, 2]`; a clear `ValueError` for anything else."""
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise ValueError(f"--layers: give comma-separated layer numbers such as 0 or 0,1,2, got {text!r}.") from None


def _read_codes_json(path: str) -> dict:
    """The JSON of `llm-codec encode`, checked: an object whose `audio_length` (if any) is a positive integer and
    whose layer codes are lists of integers. Raises `ValueError` naming what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON written by `llm-codec encode` ({error}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object as written by `llm-codec encode`, got a {type(data).__name__}.")
    length = data.get("audio_length", 1)
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise ValueError(f"{path}: audio_length must be a positive number of samples, got {length!r}; fix it or "
                         "delete the key (the whole decoded length is then kept).")
    for key in ("generation_ids", "token_ids"):
        if key in data and not (isinstance(data[key], list) and data[key]):
            raise ValueError(f"{path}: `{key}` must be a non-empty list of LLM token ids, got {type(data[key]).__name__}.")
    layers = data.get("layers", {})
    if not isinstance(layers, dict):
        raise ValueError(f"{path}: `layers` must map layer numbers to objects with `codes`, got a {type(layers).__name__}.")
    for key, entry in layers.items():
        codes = entry.get("codes") if isinstance(entry, dict) else None
        if not isinstance(codes, list) or not codes or not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
            raise ValueError(f"{path}: layer {key} must hold a non-empty list of integer `codes`.")
    return data


def cmd_decode(args) -> int:
    check_output(args.output, inputs=[args.codes], overwrite=args.overwrite)
    data = _read_codes_json(args.codes)  # before loading anything: a bad file fails at once
    model, tokenizer = _load_model(args.model)
    layers = data.get("layers", {})
    lengths = torch.tensor([data["audio_length"]]) if "audio_length" in data else None
    if all(str(k) in layers for k in range(model.config.num_quantizers)):
        codes = tuple(torch.tensor([layers[str(k)]["codes"]]) for k in range(model.config.num_quantizers))
    elif "generation_ids" in data or "token_ids" in data:
        processor = _load_processor(model, args.lm, separator=args.separator, tokenizer=tokenizer)
        codes = processor.ids_to_codes(data.get("generation_ids", data.get("token_ids")), repair=args.repair)
        lengths = None if args.repair else lengths
    else:
        missing = [k for k in range(model.config.num_quantizers) if str(k) not in layers]
        raise ValueError(f"{args.codes} lacks layers {missing} and has no generation_ids: decoding needs every layer "
                         "(encode without --layers), or LLM token ids in the generation format.")
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    audio = model.decode(codes, audio_lengths=lengths, generator=generator, progress=not args.quiet).audio_values
    save_audio(args.output, audio[0], model.config.sample_rate)
    print(f"wrote {args.output} ({audio.shape[-1] / model.config.sample_rate:.2f} s)")
    return 0


def cmd_reconstruct(args) -> int:
    check_output(args.output, inputs=[args.audio], overwrite=args.overwrite)
    model, _ = _load_model(args.model)
    encoded = _encode_file(model, args.audio, args.refine_steps, progress=not args.quiet)
    audio = model.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths, progress=not args.quiet).audio_values
    save_audio(args.output, audio[0], model.config.sample_rate)
    print(f"wrote {args.output}")
    return 0


def cmd_demo(args) -> int:
    check_output_folder(args.output)
    models = {}
    if args.model is not None or args.lm is not None:  # another stack than the default codec and LM
        codec, language_model, tokenizer = load_models(args.model, args.lm, args.device, args.audio_format)
        models = dict(codec=codec, language_model=language_model, tokenizer=tokenizer)
    elif args.audio_format != "ids":
        raise ValueError("--audio-format text is for another LM than the default codec's: add --lm NAME|FOLDER.")
    run_demo(args.output, args.clips, args.audio, audio_format=args.audio_format, **models)
    return 0


QUIET_HELP = "no progress bars (shown on standard error when the audio is longer than one encode / decode chunk)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-codec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llm-codec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="convert an original LLM-Codec checkpoint to a save_pretrained folder")
    convert_parser(convert)
    convert.set_defaults(func=cmd_convert)

    encode = sub.add_parser("encode", help="audio file -> LLM tokens (JSON with codes, words, token ids; or text)")
    encode.add_argument("--model", default=None, help=MODEL_HELP)
    encode.add_argument("--lm", default=None, help="folder of the LM whose tokenizer writes the tokens (default: the "
                                                   "offline SmolLM2 when the codec was built for it)")
    encode.add_argument("--audio", required=True, help="audio file (any rate, mono or multi-channel)")
    encode.add_argument("--layers", default=None, help="comma-separated layers to keep, e.g. 0 (default: all)")
    encode.add_argument("--format", choices=("json", "text", "codes"), default="json",
                        help="json: codes and layer-1 words per layer, plus (when the LM's tokenizer is at hand) LLM "
                             "token ids and tokens, and the invertible generation-format ids when all layers are kept; "
                             "text: what the LM reads; codes: JSON without any tokenizer (default: json)")
    encode.add_argument("--separator", default=None, help="separator token of the generation format (default: newline)")
    encode.add_argument("--refine-steps", type=non_negative_int, default=0, help=REFINE_STEPS_HELP)
    encode.add_argument("--output", default=None, help="write here (.json or .txt) instead of standard output")
    encode.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    encode.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    encode.set_defaults(func=cmd_encode)

    decode = sub.add_parser("decode", help="JSON from `encode` (codes of every layer, or generation-format LLM ids) -> wav")
    decode.add_argument("--model", default=None, help=MODEL_HELP)
    decode.add_argument("--lm", default=None, help="LM folder whose tokenizer wrote the ids (default: the offline SmolLM2)")
    decode.add_argument("--codes", required=True, help="JSON written by `llm-codec encode` (or an LM's generation ids)")
    decode.add_argument("--output", required=True, help="wav file to write")
    decode.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    decode.add_argument("--seed", type=int, default=None, help="seed of the decoder noise")
    decode.add_argument("--separator", default=None, help="separator token of the generation format (default: newline)")
    decode.add_argument("--repair", action="store_true", help="keep the longest decodable prefix of a cut id sequence")
    decode.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    decode.set_defaults(func=cmd_decode)

    reconstruct = sub.add_parser("reconstruct", help="audio file -> codes -> audio file")
    reconstruct.add_argument("--model", default=None, help=MODEL_HELP)
    reconstruct.add_argument("--audio", required=True)
    reconstruct.add_argument("--output", required=True, help="wav file to write")
    reconstruct.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    reconstruct.add_argument("--refine-steps", type=non_negative_int, default=0, help=REFINE_STEPS_HELP)
    reconstruct.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    reconstruct.set_defaults(func=cmd_reconstruct)

    from .training.cli import add_train_subparser  # lazy: training (the "train" extra, accelerate) is its own layer

    add_train_subparser(sub)

    evaluate = sub.add_parser("evaluate", help="measure: few-shot classification episodes, codec quality")
    evaluate_sub = evaluate.add_subparsers(dest="evaluation", required=True)
    # few-shot commands (classify, generate, evaluate fewshot): llm_codec/evaluation/fewshot_cli.py
    add_fewshot_parsers(sub, evaluate_sub)

    # codec commands (bench, evaluate codec): llm_codec/evaluation/codec_cli.py
    add_codec_parsers(sub, evaluate_sub)

    demo = sub.add_parser("demo", help="the main job: few-shot classification of bundled drum hits by the frozen LM, "
                                       "and a codec round trip of the bundled speech")
    demo.add_argument("--output", default="outputs", help="folder for the demo's outputs (default: %(default)s)")
    demo.add_argument("--clips", default=None, help="folder with demonstrations/<label>/ and queries/<label>/ audio")
    demo.add_argument("--audio", default=None, help="use this clip instead of the bundled one")
    add_model_arguments(demo)  # the same job with another codec / LM
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return args.func(args)
        with torch.no_grad():  # inference commands; the caller's grad mode is left as it was
            return args.func(args)
    except (ValueError, FileNotFoundError, OSError, StrictDataclassError) as error:  # CodeSequenceError is a ValueError;
        # StrictDataclassError: a config that fails its validation (huggingface_hub's strict dataclasses)
        if args.debug:
            raise
        print(f"llm-codec {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llm-codec {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # not the input's fault: one line, exit 1; --debug shows the traceback
        if args.debug:
            raise
        first_line = (str(error).strip().splitlines() or [""])[0]
        print(f"llm-codec {args.command}: failed: {type(error).__name__}: {first_line} (run with --debug for the "
              "traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
