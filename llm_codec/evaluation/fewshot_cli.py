"""Few-shot commands of `llm-codec`: `classify`, `generate` and `evaluate fewshot`.

Without `--model/--lm` they use the shipped default codec with the offline default LM (SmolLM2-135M-Instruct);
`--model FOLDER|HUB_ID` (a `save_pretrained` codec) and `--lm NAME|FOLDER` (a local transformers causal LM + tokenizer, or
an offline LM name) use others; `--audio-format text` lets an LM other than the codec's own read layer 1 as words.
Nothing is downloaded. `evaluate fewshot --methods logmel` (the no-learning reference alone) loads no model.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

import torch
from transformers import pipeline

from ..audio_io import (
    AUDIO_EXTENSIONS,
    atomic_write,
    audio_files_under,
    check_output,
    check_output_folder,
    read_audio,
    save_audio,
)
from ..default_model import load_shipped_codec, shipped_codec_name
from ..language_model import find_offline_language_model, load_language_model
from ..processing_llm_codec import resolve_collapse_repeats
from .codec_cli import MODEL_HELP, load_pretrained_codec
from .fewshot import (
    LM_METHODS,
    ClipPool,
    check_methods,
    check_setting,
    evaluate_fewshot,
    load_pool,
    parse_settings,
    results_table,
    save_results,
)

logger = logging.getLogger(__name__)

_MODEL_HELP = (
    "Models: without --model/--lm, the shipped default codec and the offline default LM (SmolLM2-135M-Instruct); "
    "--model FOLDER|HUB_ID loads a save_pretrained codec (with the default LM unless --lm names another); --lm NAME|FOLDER with "
    "--audio-format text lets any causal LM (e.g. the offline Qwen/Qwen2.5-Coder-0.5B-Instruct) read the layer-1 words."
)

_COLLAPSE_HELP = (
    "write each run of consecutive equal layer-1 words once in the prompt (a b b b c c -> a b c), demonstrations "
    "and queries alike: for codecs whose layer 1 holds few, slowly varying words per clip (default: on for a codec "
    "whose layer 1 is teacher-computed, off otherwise)"
)


# ------------------------------------------------------------------------------------------------ models


def load_models(codec: str | None = None, lm: str | None = None, device: str | None = None, audio_format: str = "ids"):
    """
    `(codec, language_model, tokenizer)` for the commands: the default codec and LM when both are `None`, a shipped
    codec for `shipped:default` / `shipped:semantic` (both speak the default LM's vocabulary), else
    `LLMCodecModel.from_pretrained(codec)` (a local folder or a Hub id) and `load_language_model(lm)` (a local transformers folder, or the name of
    an offline LM such as `Qwen/Qwen2.5-Coder-0.5B-Instruct`; the default LM when `lm` is `None`). An LM other than
    the codec's own needs `audio_format="text"` (the pipeline checks the vocabulary otherwise). Everything in eval
    mode on `device` (default: CUDA when available, else CPU).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    shipped = "default" if codec is None else shipped_codec_name(codec)
    if shipped is not None and lm is not None and audio_format != "text":
        raise ValueError("--lm with a shipped codec needs --audio-format text: the shipped codecs speak SmolLM2's "
                         "vocabulary, so another LM can only read their layer-1 words as text (or give the codec built "
                         "for that LM).")
    if lm is not None and not Path(lm).is_dir() and find_offline_language_model(lm) is None:
        raise FileNotFoundError(f"--lm: {lm} is neither a local LM folder nor an offline LM name "
                                "(see `llm_codec.language_model.OFFLINE_LANGUAGE_MODELS`).")
    if shipped is not None:
        model, trained, (language_model, tokenizer) = load_shipped_codec(shipped)
        if not trained:
            logger.warning("The default codec is untrained (random encoder): results are not meaningful.")
    else:
        model = load_pretrained_codec(codec)
        language_model = tokenizer = None
    if lm is not None or language_model is None:
        language_model, tokenizer = load_language_model(lm)
    return model.eval().to(device), language_model.eval().to(device), tokenizer


def _pipeline(task: str, args, **kwargs):
    audio_format = getattr(args, "audio_format", "ids")
    codec, lm, tokenizer = load_models(args.model, args.lm, args.device, audio_format)
    if audio_format != "ids":
        kwargs["audio_format"] = audio_format
    return pipeline(task, model=codec, language_model=lm, tokenizer=tokenizer, device=codec.device, **kwargs)


def add_model_arguments(parser: argparse.ArgumentParser, audio_format: bool = True) -> None:
    """Adds the "models" options that `load_models` reads: --model, --lm, --audio-format (unless `audio_format` is
    False) and --device."""
    group = parser.add_argument_group("models")
    group.add_argument("--model", default=None, metavar="FOLDER|HUB_ID|shipped:semantic", help=MODEL_HELP)
    group.add_argument("--lm", default=None, metavar="NAME|FOLDER", help="causal LM: a local folder with its tokenizer, "
                       "or an offline LM name such as Qwen/Qwen2.5-Coder-0.5B-Instruct (default: the offline "
                       "SmolLM2-135M-Instruct). An LM other than the codec's own needs --audio-format text")
    if audio_format:
        group.add_argument("--audio-format", choices=("ids", "text"), default="ids",
                           help="ids: codes as ids of the codec's own LM (default); text: layer-1 words as text, "
                           "for any LM")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


# ---------------------------------------------------------------------------------------------- classify


def _queries(items: list[str]) -> list[tuple[str, str | None]]:
    """`--queries`: a labelled folder (root/<label>/...), a flat folder, or files -> [(path, true label or None)]."""
    if len(items) == 1 and Path(items[0]).is_dir():
        root = Path(items[0])
        subfolders = sorted(p for p in root.iterdir() if p.is_dir() and audio_files_under(p))
        if subfolders:
            return [(str(f), sub.name) for sub in subfolders for f in audio_files_under(sub)]
        files = audio_files_under(root)
        if not files:
            raise ValueError(f"--queries: no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root}.")
        return [(str(f), None) for f in files]
    result = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            raise ValueError(f"--queries: give one folder, or audio files; {item} is a folder among several items.")
        if not path.is_file():
            raise FileNotFoundError(f"--queries: no audio file at {item}.")
        result.append((str(path), None))
    return result


def cmd_classify(args) -> int:
    if args.output:
        check_output(args.output, overwrite=args.overwrite, suffixes=(".json",))
    method = check_methods(args.method)[0]
    if method not in LM_METHODS:
        raise ValueError(f"--method {method}: classify scores with the LM; choose among {', '.join(LM_METHODS)} "
                         "(the codes and logmel references are part of `llm-codec evaluate fewshot`).")
    demos = ClipPool.from_folder(args.demos)
    if args.shots is not None and args.shots < 1:
        raise ValueError("--shots must be at least 1.")
    chosen = []
    for label, indices in demos.indices_by_label().items():
        chosen += [(i, label) for i in indices[: args.shots or len(indices)]]
    if len({label for _, label in chosen}) < 2:
        raise ValueError(f"--demos {args.demos}: needs clips of at least two labels (one subfolder per label).")
    queries = _queries(args.queries)
    classify = _pipeline("audio-few-shot-classification", args)
    rate = classify.model.config.sample_rate
    demonstrations = [(demos.audio(i, rate), label) for i, label in chosen]
    labels = list(dict.fromkeys(label for _, label in chosen))
    print(f"demonstrations ({len(chosen)}, {len(labels)} labels):")
    for i, label in chosen:
        print(f"  {label}: {demos.describe(i)}")
    rankings = classify(
        [read_audio(path, rate) for path, _ in queries], demonstrations=demonstrations, sampling_rate=rate,
        method="icl" if method == "calibrated" else method, calibrate=method == "calibrated",
        n_repeats=args.repeats, instruction=not args.no_instruction, top_k=args.top_k,
        collapse_repeats=args.collapse_repeats,
    )
    print(f"queries ({len(queries)}, method {method}):")
    report, correct = [], 0
    for (path, truth), ranking in zip(queries, rankings):
        ranked = ", ".join(f"{r['label']} {r['score']:.3f}" for r in ranking)
        mark = "" if truth is None else ("  [ok]" if ranking[0]["label"] == truth else f"  [wrong: {truth}]")
        print(f"  {path}: {ranked}{mark}")
        correct += truth is not None and ranking[0]["label"] == truth
        report.append({"path": path, "label": truth, "ranking": ranking})
    collapse = resolve_collapse_repeats(args.collapse_repeats, classify.model.config)
    summary = {"method": method, "collapse_repeats": collapse,
               "demonstrations": [{"path": demos.describe(i), "label": l} for i, l in chosen],
               "labels": labels, "queries": report}
    known = [truth for _, truth in queries if truth is not None]
    if known:
        unknown_labels = sorted(set(known) - set(labels))
        summary["accuracy"] = correct / len(known)
        print(f"accuracy: {correct}/{len(known)} = {correct / len(known):.3f} (chance {1 / len(labels):.3f})"
              + (f"; query labels without demonstrations: {unknown_labels}" if unknown_labels else ""))
    if args.output:
        text = json.dumps(summary, indent=1, ensure_ascii=False)
        atomic_write(args.output, lambda tmp: tmp.write_text(text))
        print(f"wrote {args.output}")
    return 0


# ---------------------------------------------------------------------------------------------- generate


def _is_file(path) -> bool:
    try:
        return Path(path).is_file()
    except OSError:  # e.g. a long text input is not a file name
        return False


def _side(value: str, base: Path | None) -> str:
    """A demonstration side: an existing audio file (resolved against `base`) -> its path; other text -> text."""
    path = Path(value)
    for candidate in ([path] if path.is_absolute() or base is None else [base / path, path]):
        if _is_file(candidate):
            return str(candidate)
    if path.suffix.lower() in (*AUDIO_EXTENSIONS, ".mp3"):
        raise FileNotFoundError(f"No audio file at {value}" + (f" (relative to {base})" if base else "") + ".")
    return value


def read_generation_demos(source: str | Path) -> list[tuple[str, str]]:
    """
    `(input, output)` demonstration pairs for `generate`: a folder with `input/` and `output/` subfolders whose
    files are matched by name (stem), a JSON file (a list of `[input, output]` pairs or of `{"input", "output"}`
    objects) or a TSV file (input, output per line; a header line `input\\toutput` is skipped). Paths are relative
    to the file's folder; an input that is not a file is text. Outputs must be audio files.
    """
    source = Path(source)
    if source.is_dir():
        inputs, outputs = source / "input", source / "output"
        if not inputs.is_dir() or not outputs.is_dir():
            raise FileNotFoundError(f"--demos {source}: expected subfolders input/ and output/ (files matched by name).")
        targets = {p.stem: p for p in audio_files_under(outputs)}
        pairs = [(str(p), str(targets[p.stem])) for p in audio_files_under(inputs) if p.stem in targets]
        if not pairs:
            raise ValueError(f"--demos {source}: no file of input/ has an output/ file of the same name.")
        return pairs
    if not source.is_file():
        raise FileNotFoundError(f"--demos: no folder or JSON/TSV file at {source}.")
    if source.suffix.lower() == ".json":
        rows = json.loads(source.read_text(encoding="utf-8"))
        rows = [(r["input"], r["output"]) if isinstance(r, dict) else tuple(r) for r in rows]
    else:
        with open(source, newline="", encoding="utf-8") as handle:
            rows = [tuple(r) for r in csv.reader(handle, delimiter="\t") if r]
        if rows and [c.strip().lower() for c in rows[0]] == ["input", "output"]:
            rows = rows[1:]
    pairs = []
    for number, row in enumerate(rows, 1):
        if len(row) != 2:
            raise ValueError(f"--demos {source}: row {number} has {len(row)} fields; give (input, output) pairs.")
        source_side, target = _side(str(row[0]), source.parent), _side(str(row[1]), source.parent)
        if not Path(target).is_file():
            raise ValueError(f"--demos {source}: row {number}: the output {target!r} must be an audio file.")
        pairs.append((source_side, target))
    if not pairs:
        raise ValueError(f"--demos {source} lists no (input, output) pair.")
    return pairs


def cmd_generate(args) -> int:
    pairs = read_generation_demos(args.demos)
    query = _side(args.query, None)
    check_output(args.output, inputs=[query, *(side for pair in pairs for side in pair)], overwrite=args.overwrite)
    generate = _pipeline("audio-few-shot-generation", args, separator=args.separator.replace("\\n", "\n").replace("\\t", "\t"))
    config = generate.model.config
    seconds = args.max_seconds
    if args.max_words is not None:
        seconds = (args.max_words + 0.5) * config.vq_strides[0] / config.frame_rate  # the pipeline rounds down
    print(f"demonstrations ({len(pairs)}):")
    for source, target in pairs:
        print(f"  {source} -> {target}")
    rate = config.sample_rate
    audio = lambda side: read_audio(side, rate) if _is_file(side) else side  # noqa: E731 (text stays text)
    demonstrations = [(audio(source), read_audio(target, rate)) for source, target in pairs]
    out = generate(audio(query), demonstrations=demonstrations, sampling_rate=rate, max_audio_seconds=seconds,
                   do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    save_audio(args.output, out["audio"], out["sampling_rate"])
    print(f"wrote {args.output} ({len(out['audio']) / out['sampling_rate']:.2f} s, {len(out['tokens'])} LM tokens)")
    return 0


# -------------------------------------------------------------------------------------- evaluate fewshot


def cmd_evaluate_fewshot(args) -> int:
    methods = check_methods(args.methods)
    settings = parse_settings(args.settings) if args.settings else [(args.ways, args.shots)]
    check_output_folder(args.output)
    pool = load_pool(args.data, name=args.task_name)
    for n_way, k_shot in settings:  # fail before loading any model
        check_setting(pool, n_way, k_shot, args.queries_per_class, args.group_key)
    print(f"{pool.name}: {len(pool)} clips, {len(pool.classes)} classes")
    if methods == ("logmel",):  # the no-learning reference alone: no codec, no LM
        if args.model or args.lm:
            logger.warning("--methods logmel needs no model: --model/--lm are not loaded.")
        classify = None
    else:
        classify = _pipeline("audio-few-shot-classification", args)
    results = evaluate_fewshot(
        classify, pool, settings=settings, methods=methods, n_queries=args.queries_per_class,
        n_episodes=args.episodes, n_repeats=args.repeats, instruction=not args.no_instruction,
        group_key=args.group_key, seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress,
        collapse_repeats=args.collapse_repeats,
    )
    paths = save_results(results, args.output)
    print(results_table(results), end="")
    print(f"wrote {paths['json']} and {paths['markdown']}")
    return 0


# ---------------------------------------------------------------------------------------------- parsers


def add_parsers(sub, evaluate_sub) -> None:
    """Adds `classify` and `generate` to the `llm-codec` commands (`sub`) and `fewshot` to `llm-codec evaluate`."""
    formatter = argparse.RawDescriptionHelpFormatter

    classify = sub.add_parser(
        "classify", formatter_class=formatter,
        help="few-shot classification of audio files from labelled demonstration clips",
        description="Classify audio clips with a frozen LM that reads a few labelled demonstrations in its prompt.\n\n"
        + _MODEL_HELP,
        epilog="example:\n  llm-codec classify --demos demos/ --queries queries/ --method calibrated --shots 3\n"
        "  (demos/<label>/*.wav; queries/ flat, or queries/<label>/*.wav to also print the accuracy)",
    )
    classify.add_argument("--demos", required=True, metavar="DIR", help="demonstrations: DIR/<label>/*.wav|flac|ogg")
    classify.add_argument("--queries", required=True, nargs="+", metavar="DIR|FILE",
                          help="a folder of clips (DIR/<label>/... when labelled: accuracy is printed) or audio files")
    classify.add_argument("--method", default="icl", help="icl (label likelihood, default), calibrated (contextual "
                          "calibration) or embedding (LM hidden-state prototypes)")
    classify.add_argument("--shots", type=int, default=None, metavar="K", help="use at most K demonstrations per label "
                          "(the first K by file name; default: all)")
    classify.add_argument("--repeats", type=int, default=1, metavar="R", help="repeat the demonstrations R times in the prompt (default 1)")
    classify.add_argument("--no-instruction", action="store_true", help="leave out the instruction line listing the labels")
    classify.add_argument("--collapse-repeats", action=argparse.BooleanOptionalAction, default=None, help=_COLLAPSE_HELP)
    classify.add_argument("--top-k", type=int, default=None, help="print only the best k labels per query")
    classify.add_argument("--output", default=None, metavar="JSON", help="also write the rankings to this JSON file")
    classify.add_argument("--overwrite", action="store_true", help="replace the --output file if it exists")
    add_model_arguments(classify)
    classify.set_defaults(func=cmd_classify)

    generate = sub.add_parser(
        "generate", formatter_class=formatter,
        help="few-shot audio generation from (input, output) demonstration pairs",
        description="The LM continues demonstration pairs with codec tokens, decoded to audio.\n\n" + _MODEL_HELP,
        epilog="example:\n  llm-codec generate --demos pairs/ --query in.wav --output out.wav --max-words 8\n"
        "  (pairs/input/a.wav pairs with pairs/output/a.wav; or a JSON list of [input, output] / TSV file)",
    )
    generate.add_argument("--demos", required=True, metavar="DIR|FILE", help="a folder with input/ and output/ "
                          "subfolders (files matched by name), or a JSON/TSV file of (input, output) pairs; inputs may "
                          "be text, outputs are audio files")
    generate.add_argument("--query", required=True, metavar="FILE|TEXT", help="the input to continue (audio file or text)")
    generate.add_argument("--output", required=True, metavar="WAV", help="wav file to write")
    generate.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    generate.add_argument("--max-seconds", type=float, default=2.0, help="longest audio to generate (default 2)")
    generate.add_argument("--max-words", type=int, default=None,
                          help="longest generation in layer-1 words (overrides --max-seconds)")
    generate.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    generate.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    generate.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens")
    generate.add_argument("--seed", type=int, default=None, help="seed of sampling and of the decoder noise")
    generate.add_argument("--separator", default="\\n", help="the token between layer 1 and layers 2-3 "
                          "(default a newline; escapes like \\n are understood)")
    add_model_arguments(generate, audio_format=False)
    generate.set_defaults(func=cmd_generate)

    fewshot = evaluate_sub.add_parser(
        "fewshot", formatter_class=formatter,
        help="accuracy over N-way K-shot classification episodes (UniAudio 1.5 protocol)",
        description="Sample N-way K-shot episodes from a labelled clip pool, classify every query with each method, "
        "and write results.json, results.md and confusion-matrix PNGs. The logmel method (nearest class prototype of "
        "log-mel statistics, no model) is the no-learning reference that the LM methods must beat.\n\n" + _MODEL_HELP,
        epilog="examples:\n"
        "  llm-codec evaluate fewshot --data data/tasks/drum_type --group-key kit --output outputs/fewshot/drums\n"
        "  llm-codec evaluate fewshot --data data/tasks/instrument --settings 2x1,2x3,3x1,3x3,5x5 --episodes 50 "
        "--output outputs/fewshot/instrument\n"
        "  llm-codec evaluate fewshot --data data/tasks/drum_type --group-key kit --methods logmel "
        "--output outputs/fewshot/drums_logmel   (no model loaded)",
    )
    fewshot.add_argument("--data", required=True, metavar="DIR|MANIFEST", help="DIR/<label>/*.wav|flac|ogg, a folder "
                         "with manifest.jsonl, or a .jsonl manifest (path, label and optional group fields)")
    fewshot.add_argument("--task-name", default=None, help="name in the results (default: the folder's name)")
    fewshot.add_argument("--ways", type=int, default=2, metavar="N", help="classes per episode (default 2)")
    fewshot.add_argument("--shots", type=int, default=1, metavar="K", help="demonstrations per class (default 1)")
    fewshot.add_argument("--settings", default=None, metavar="NxK,...", help="several settings in one run, e.g. "
                         "2x1,2x3,3x1,3x3,5x5 (overrides --ways/--shots; clips are encoded once)")
    fewshot.add_argument("--queries-per-class", type=int, default=2, metavar="Q", help="queries per class and episode (default 2)")
    fewshot.add_argument("--episodes", type=int, default=20, help="episodes per setting (default 20)")
    fewshot.add_argument("--repeats", type=int, default=1, metavar="R", help="repeat the demonstrations R times (default 1)")
    fewshot.add_argument("--no-instruction", action="store_true", help="leave out the instruction line")
    fewshot.add_argument("--collapse-repeats", action=argparse.BooleanOptionalAction, default=None,
                         help=_COLLAPSE_HELP + "; recorded in the results")
    fewshot.add_argument("--group-key", default=None, help="manifest field (e.g. kit, speaker) whose groups must not "
                         "feed both demonstrations and queries of an episode")
    fewshot.add_argument("--methods", default="icl,calibrated,embedding,codes,logmel",
                         help="comma-separated, among icl, calibrated, embedding, codes (nearest prototype of the "
                         "clips' layer-1 code histograms: what the codes carry, no LM) and logmel (the no-learning "
                         "reference: nearest prototype of log-mel statistics; alone, no model is loaded) "
                         "(default: all five)")
    fewshot.add_argument("--seed", type=int, default=0, help="seed of the episode sampling (default 0)")
    fewshot.add_argument("--batch-size", type=int, default=8, help="queries per LM pass and clips per codec batch (default 8)")
    fewshot.add_argument("--output", required=True, metavar="DIR", help="folder for results.json, results.md and PNGs")
    fewshot.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_arguments(fewshot)
    fewshot.set_defaults(func=cmd_evaluate_fewshot)


__all__ = ["add_parsers", "load_models", "read_generation_demos"]
