"""`llm-codec evaluate codec` (reconstruction quality against baselines) and `llm-codec bench` (speed and memory)."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

import torch
from huggingface_hub.errors import (
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from ..audio_io import atomic_write, check_output, check_output_folder
from ..default_model import SHIPPED_CODECS, load_shipped_codec, shipped_codec_name
from ..modeling_llm_codec import LLMCodecModel
from .baselines import DEFAULT_BASELINES, Baseline
from .codec_quality import evaluate_codec
from .report import save_results
from .timing import benchmark_codec, peak_rss_mb


def load_codec(model: str | None):
    """
    The codec of a command, a description of it, and the tokenizer of its LM when that was loaded with it:
    `(LLMCodecModel in eval mode, str, tokenizer or None)`.

    Args:
        model (`str`, *optional*): a folder written by `save_pretrained` / `llm-codec convert` / training, or a
            Hugging Face Hub id (`user/repo`, see `load_pretrained_codec`); `None` or `"shipped:default"` loads the
            shipped default codec, `"shipped:semantic"` the shipped semantic codec (`load_shipped_codec`, which also
            loads the offline default LM, whose tokenizer is returned).
    """
    name = "default" if model is None else shipped_codec_name(model)
    if name is not None:
        codec, trained, (_, tokenizer) = load_shipped_codec(name)
        description = SHIPPED_CODECS[name] + ("" if trained else " (UNTRAINED: random weights)")
        return codec.eval(), description, tokenizer
    codec = load_pretrained_codec(model)
    where = f"the codec in {model}" if Path(model).is_dir() else f"the codec {model} (Hugging Face Hub)"
    return codec.eval(), where, None


def load_pretrained_codec(model: str, flag: str = "--model"):
    """
    `LLMCodecModel.from_pretrained(model)` for a command's `flag`: `model` is a local folder (written by
    `save_pretrained`, `llm-codec convert` or training), a shipped codec (`shipped:default`, `shipped:semantic`), or
    a Hugging Face Hub id (`user/repo`), which is passed through
    to `from_pretrained` (downloaded, or read from the Hub cache). Raises `FileNotFoundError` / `OSError` saying that
    `model` is neither a local folder nor reachable on the Hub, with the Hub client's own reason.
    """
    name = shipped_codec_name(model)
    if name is not None:
        return load_shipped_codec(name)[0]
    path = Path(model)
    if path.is_file():
        raise FileNotFoundError(f"{flag} {model} is a file: give a codec folder (save_pretrained / `llm-codec "
                                "convert` / training) or a Hub id such as user/repo.")
    if path.is_dir():
        return LLMCodecModel.from_pretrained(model)
    try:
        validate_repo_id(str(model))
    except HFValidationError:
        raise FileNotFoundError(f"{flag} {model}: no such folder, and not a Hugging Face Hub id (user/repo) either. "
                                "Give a codec folder written by save_pretrained / `llm-codec convert` / training, or "
                                "a Hub id.") from None
    try:
        return LLMCodecModel.from_pretrained(model)
    except OSError as error:
        if not _unreachable(error):  # the repository was found: its own error (a missing or damaged file) stands
            raise
        reason = " ".join(str(error).split())
        raise OSError(f"{flag} {model} is neither a local folder nor reachable on the Hugging Face Hub ({reason}). "
                      "Check the path, or the Hub id and your connection (a Hub codec is read from the local Hub "
                      "cache when offline).") from None


def _unreachable(error: BaseException) -> bool:
    """Whether a `from_pretrained` error means the Hub repository could not be reached or does not exist."""
    seen = error
    while seen is not None:
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError)):
            return True
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    return "couldn't connect" in text or "not a valid model identifier" in text


def _baselines(text: str) -> list[str]:
    if text.strip().lower() in ("", "none"):
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        Baseline.parse(name)  # ValueError naming the accepted forms
    return names


def _filters(items: list[str] | None) -> dict[str, str]:
    filters = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--where {item!r}: use FIELD=VALUE, e.g. --where source=klettres-data.")
        filters[key] = value
    return filters


def _with_threads(threads: int | None, run):
    """Runs `run()` with `threads` torch threads (when given), restoring the previous count afterwards."""
    if threads is None:
        return run()
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return run()
    finally:
        torch.set_num_threads(previous)


def cmd_evaluate_codec(args) -> int:
    return _with_threads(args.threads, lambda: _evaluate_codec(args))


def _evaluate_codec(args) -> int:
    baselines = _baselines(args.baselines)
    filters = _filters(args.where)
    out = check_output_folder(args.output)  # before loading the codec or reading a clip
    codec, description, _ = load_codec(args.model)
    results = evaluate_codec(
        codec,
        args.data,
        max_clips=args.max_clips,
        seed=args.seed,
        baselines=baselines,
        kind=args.kind,
        filters=filters,
        spectrogram_path=None if args.no_spectrogram else out / "spectrogram.png",
        progress=not args.quiet,
        refine_steps=args.refine_steps,
        name=f"llm-codec-refine{args.refine_steps}" if args.refine_steps else "llm-codec",
    )
    json_path, md_path = save_results(results, out)
    print(f"Evaluated {description} on {results.num_clips} clips ({results.total_duration_s:.1f} s) of {args.data}.")
    print(results.to_markdown())
    print(f"wrote {json_path} and {md_path}" + (f" and {results.spectrogram}" if results.spectrogram else ""))
    return 0


def cmd_bench(args) -> int:
    return _with_threads(args.threads, lambda: _bench(args))


def _bench(args) -> int:
    if args.output:
        check_output(args.output, overwrite=args.overwrite, suffixes=(".json",))

    rss_before = peak_rss_mb()
    codec, description, _ = load_codec(args.model)
    rss_loaded = peak_rss_mb()
    result = benchmark_codec(codec, seconds=args.seconds, repeats=args.repeats, seed=args.seed)
    config = codec.config
    print(f"Benchmark of {description}.")
    print(f"Method: {result.method}")
    print(f"  tokens/s {result.tokens_per_second:.2f} ({' / '.join(f'{r:.2f}' for r in config.tokens_per_second)} per "
          f"layer), bitrate {result.bitrate:.1f} bit/s")
    print(f"  encode, first call        {result.encode_first_s:8.3f} s")
    print(f"  encode (median of {result.repeats})      {result.encode_s:8.3f} s   real-time factor {result.encode_rtf:.3f}"
          f"   runs {', '.join(f'{t:.3f}' for t in result.encode_runs_s)}")
    print(f"  decode (median of {result.repeats})      {result.decode_s:8.3f} s   real-time factor {result.decode_rtf:.3f}"
          f"   runs {', '.join(f'{t:.3f}' for t in result.decode_runs_s)}")
    print(f"  encode + decode           {result.encode_s + result.decode_s:8.3f} s   real-time factor "
          f"{result.real_time_factor:.3f} ({1 / result.real_time_factor:.1f}x faster than real time)")
    print(f"  peak RSS                  {result.peak_rss_mb:8.0f} MB  (before loading {rss_before:.0f} MB, after "
          f"loading {rss_loaded:.0f} MB)")
    if args.output:
        text = json.dumps({**asdict(result), "model": description, "rss_before_load_mb": rss_before,
                           "rss_after_load_mb": rss_loaded}, indent=2)
        path = atomic_write(args.output, lambda tmp: tmp.write_text(text))
        print(f"wrote {path}")
    return 0


MODEL_HELP = ("codec: a local folder, a Hugging Face Hub id such as user/repo, or shipped:semantic (the shipped codec "
              "whose layer-1 words a frozen LM can learn voices from; needs Resemblyzer) (default: the shipped "
              "default codec)")

REFINE_STEPS_HELP = (
    "refine the codes of layers 2-3 by this many analysis-by-synthesis steps against the input (`refine_codes`): "
    "closer audio at the same token rate, slower encoding (at 50, encode + decode took about 6.5 s per second of "
    "audio on 2 CPU threads with the default codec; inputs over 15 s are refined in windows of about 10 s, about "
    "1.2 GB of memory on top) (default: 0, off)"
)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return value


def add_parsers(sub, evaluate_sub) -> None:
    """
    Adds `bench` to the top-level subparsers `sub` and `codec` to `evaluate_sub` (the subparsers of `evaluate`).

    Args:
        sub (`argparse._SubParsersAction`): subparsers of `llm-codec`.
        evaluate_sub (`argparse._SubParsersAction`): subparsers of `llm-codec evaluate`.
    """
    codec = evaluate_sub.add_parser(
        "codec",
        help="reconstruction quality (PESQ-WB, STOI, mel distance, SI-SDR) against codec2 / Opus baselines",
        description="Encode and decode every clip of a folder or JSONL manifest, score the reconstructions and "
        "write results.json, results.md and spectrogram.png to --output.",
    )
    codec.add_argument("--data", required=True, help="folder of audio files, or JSONL manifest with a `path` per row")
    codec.add_argument("--model", default=None, help=MODEL_HELP)
    codec.add_argument("--output", required=True, help="folder for results.json, results.md, spectrogram.png")
    codec.add_argument("--kind", default=None, help="keep manifest rows with this `kind`, e.g. speech")
    codec.add_argument("--where", action="append", default=None, metavar="FIELD=VALUE",
                       help="keep manifest rows with FIELD == VALUE (repeatable), e.g. source=klettres-data")
    codec.add_argument("--max-clips", type=int, default=None, help="a seeded random subset of this many clips")
    codec.add_argument("--seed", type=int, default=0, help="seed of the subset and of the decoder noise")
    codec.add_argument("--baselines", default=",".join(DEFAULT_BASELINES),
                       help="comma-separated codec2-<MODE> / opus-<N>k, or none (default: %(default)s)")
    codec.add_argument("--threads", type=int, default=None,
                       help="torch threads (default: torch's choice; 1 is faster on a machine busy with other work)")
    codec.add_argument("--refine-steps", type=non_negative_int, default=0, help=REFINE_STEPS_HELP)
    codec.add_argument("--no-spectrogram", action="store_true", help="do not write spectrogram.png")
    codec.add_argument("--quiet", action="store_true", help="no progress bar")
    codec.set_defaults(func=cmd_evaluate_codec)

    bench = sub.add_parser("bench", help="encode / decode speed, real-time factor and peak memory of a codec")
    bench.add_argument("--model", default=None, help=MODEL_HELP)
    bench.add_argument("--seconds", type=positive_seconds, default=10.0, help="length of the test clip (default: %(default)s)")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs, median reported (default: %(default)s)")
    bench.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    bench.add_argument("--seed", type=int, default=0, help="seed of the decoder noise")
    bench.add_argument("--output", default=None, help="also write the figures to this JSON file")
    bench.add_argument("--overwrite", action="store_true", help="replace the --output file if it exists")
    bench.set_defaults(func=cmd_bench)
