"""`llm-codec` command line: convert original checkpoints, encode audio to LLM-vocabulary codes, decode, reconstruct."""

import argparse
import json
import sys
from pathlib import Path


def _load_model(path: str):
    import torch

    from .modeling_llm_codec import LLMCodecModel

    if not Path(path).is_dir():
        raise FileNotFoundError(f"No model folder at {path}: give a folder written by save_pretrained / `llm-codec convert`.")
    model = LLMCodecModel.from_pretrained(path).eval()
    torch.set_grad_enabled(False)
    return model


def _encode_file(model, audio_path: str):
    from .audio_io import load_audio
    from .feature_extraction_llm_codec import LLMCodecFeatureExtractor

    samples, rate = load_audio(audio_path)
    features = LLMCodecFeatureExtractor(sampling_rate=model.config.sample_rate)
    inputs = features(samples, sampling_rate=rate, return_tensors="pt")
    return model.encode(**inputs)


def cmd_convert(args) -> int:
    from .conversion.convert_llm_codec_checkpoint import main as convert_main

    argv = ["--checkpoint", args.checkpoint, "--config", args.config, "--output-dir", args.output_dir]
    for flag, value in (("--layer1-words", args.layer1_words), ("--tokenizer", args.tokenizer), ("--llm-name", args.llm_name)):
        if value is not None:
            argv += [flag, value]
    return convert_main(argv)


def cmd_encode(args) -> int:
    model = _load_model(args.model)
    encoded = _encode_file(model, args.audio)
    layers = [int(k) for k in args.layers.split(",")] if args.layers else list(range(model.config.num_quantizers))
    result = {"sampling_rate": model.config.sample_rate, "audio_length": int(encoded.audio_lengths[0]), "layers": {}}
    for k in layers:
        if not 0 <= k < model.config.num_quantizers:
            raise ValueError(f"--layers: layer {k} does not exist (0..{model.config.num_quantizers - 1}).")
        codes = encoded.audio_codes[k][0].tolist()
        entry = {"codes": codes}
        if k == 0 and model.config.layer1_words is not None:
            entry["words"] = [model.config.layer1_words[c] for c in codes]
        result["layers"][str(k)] = entry
    text = json.dumps(result, ensure_ascii=False)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text)
    return 0


def cmd_decode(args) -> int:
    import torch

    from .audio_io import save_audio

    model = _load_model(args.model)
    data = json.loads(Path(args.codes).read_text())
    layers = data.get("layers", {})
    missing = [k for k in range(model.config.num_quantizers) if str(k) not in layers]
    if missing:
        raise ValueError(f"{args.codes} lacks layers {missing}: decoding needs every layer (encode without --layers).")
    codes = tuple(torch.tensor([layers[str(k)]["codes"]]) for k in range(model.config.num_quantizers))
    if args.seed is not None:
        torch.manual_seed(args.seed)
    lengths = torch.tensor([data["audio_length"]]) if "audio_length" in data else None
    audio = model.decode(codes, audio_lengths=lengths).audio_values
    save_audio(args.output, audio[0], model.config.sample_rate)
    print(f"wrote {args.output} ({audio.shape[-1] / model.config.sample_rate:.2f} s)")
    return 0


def cmd_reconstruct(args) -> int:
    from .audio_io import save_audio

    model = _load_model(args.model)
    encoded = _encode_file(model, args.audio)
    audio = model.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths).audio_values
    save_audio(args.output, audio[0], model.config.sample_rate)
    print(f"wrote {args.output}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.output_dir, args.clips, args.audio)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .conversion.convert_llm_codec_checkpoint import build_parser as convert_parser

    parser = argparse.ArgumentParser(prog="llm-codec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="convert an original LLM-Codec checkpoint to a save_pretrained folder")
    convert_parser(convert)
    convert.set_defaults(func=cmd_convert)

    encode = sub.add_parser("encode", help="audio file -> codes (JSON; layer-1 words when known)")
    encode.add_argument("--model", required=True, help="codec folder")
    encode.add_argument("--audio", required=True, help="audio file (any rate, mono or multi-channel)")
    encode.add_argument("--layers", default=None, help="comma-separated layers to keep, e.g. 0 (default: all)")
    encode.add_argument("--output", default=None, help="write JSON here instead of standard output")
    encode.set_defaults(func=cmd_encode)

    decode = sub.add_parser("decode", help="codes JSON (from encode) -> wav")
    decode.add_argument("--model", required=True)
    decode.add_argument("--codes", required=True, help="JSON written by `llm-codec encode`")
    decode.add_argument("--output", required=True, help="wav file to write")
    decode.add_argument("--seed", type=int, default=None, help="seed of the decoder noise")
    decode.set_defaults(func=cmd_decode)

    reconstruct = sub.add_parser("reconstruct", help="audio file -> codes -> audio file")
    reconstruct.add_argument("--model", required=True)
    reconstruct.add_argument("--audio", required=True)
    reconstruct.add_argument("--output", required=True)
    reconstruct.set_defaults(func=cmd_reconstruct)

    from .training.cli import add_train_subparser

    add_train_subparser(sub)

    evaluate = sub.add_parser("evaluate", help="measure: few-shot classification episodes, codec quality")
    evaluate_sub = evaluate.add_subparsers(dest="evaluation", required=True)
    # few-shot commands (classify, generate, evaluate fewshot): llm_codec/evaluation/fewshot_cli.py
    # codec commands (bench, evaluate codec): llm_codec/evaluation/codec_cli.py

    demo = sub.add_parser("demo", help="the main job: few-shot classification of bundled drum hits by the frozen LM, "
                                       "and a codec round trip of the bundled speech")
    demo.add_argument("--output-dir", default="outputs")
    demo.add_argument("--clips", default=None, help="folder with demonstrations/<label>/ and queries/<label>/ audio")
    demo.add_argument("--audio", default=None, help="use this clip instead of the bundled one")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"llm-codec {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
