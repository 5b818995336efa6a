"""
Ships a trained grouped codec as the package's opt-in semantic codec, `llm_codec/assets/semantic_codec/`:
`config.json`, `weights_without_codebooks.safetensors` (float32, without the frozen codebooks, which SmolLM2
rebuilds, and without the Resemblyzer teacher, which its wheel provides) and a model card (`README.md`).

    R=experiments/semantic_layer1/results
    python scripts/ship_semantic_codec.py runs/grouped_bigbatch_step449 \
        --heldout "mixed speech" $R/grouped_bigbatch_confirm_heldout/results.json $R/shipped_confirm_heldout/results.json \
        --heldout "read prompts" $R/grouped_bigbatch_confirm_read_speech/results.json \
            $R/shipped_confirm_read_speech/results.json \
        --fewshot benchmarks/results_fewshot_semantic_codec/speaker_id/results.json \
        --fewshot-description "four voices of a Czech and Dutch game, demonstrations and queries from different lines"

The source is a complete codec folder (`experiments/semantic_layer1/export_checkpoint.py` writes one from a training
checkpoint) with the default codec's architecture and vocabulary, `semantic_teacher="resemblyzer"` and
`semantic_groups=True`. After writing, the script loads the shipped copy with `load_semantic_codec()` and checks that
it gives the source folder's codes and audio on the bundled example clip; it stops with an error otherwise.
`--heldout NAME OURS DEFAULT` (repeatable): `llm-codec evaluate codec` results of this codec and of the default codec
on the same held-out clips, summarised in the model card with clip-by-clip intervals; `--fewshot`: an
`llm-codec evaluate fewshot --model shipped:semantic` results.json, summarised there too.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def heldout_section(pairs: list[tuple[str, str, str]]) -> str:
    """Markdown: for each `(set name, this codec's results.json, the default codec's results.json on the same
    clips)`, the mean PESQ-WB / STOI / mel distance of both and the clip-by-clip difference with its 95 % bootstrap
    interval (`llm_codec.evaluation.statistics.paired_difference`)."""
    import numpy as np

    from llm_codec.evaluation.statistics import paired_difference

    rows = []
    for name, ours_path, shipped_path in pairs:
        ours, shipped = (json.loads(Path(p).read_text())["systems"][0] for p in (ours_path, shipped_path))
        if [c["clip"] for c in ours["per_clip"]] != [c["clip"] for c in shipped["per_clip"]]:
            raise SystemExit(f"{ours_path} and {shipped_path} were not run on the same clips.")
        cells = []
        for metric in ("pesq_wb", "stoi", "mel_distance"):
            a, b = (np.array([np.nan if c[metric] is None else c[metric] for c in r["per_clip"]], dtype=float)
                    for r in (ours, shipped))
            d = paired_difference(a, b)
            cells.append(f"{ours['means'][metric]:.3f} vs {shipped['means'][metric]:.3f}: "
                         f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
        rows.append(f"| {name} | {len(ours['per_clip'])} | " + " | ".join(cells) + " |")
    return (
        "Held-out speech (voices and languages never heard in training), both codecs on the same clips: this codec "
        "vs the default codec, and the clip-by-clip difference with its 95 % bootstrap interval (mel distance: "
        "lower is better). From `llm-codec evaluate codec --data data/codec_heldout.jsonl --kind speech --seed 1`.\n\n"
        "| clips | number | PESQ-WB | STOI | mel distance |\n| --- | --- | --- | --- | --- |\n" + "\n".join(rows) +
        "\n\nIt costs a little PESQ-WB against the default codec; use the default codec where reconstruction "
        "matters most."
    )


def fewshot_section(path: str, lm_name: str, description: str | None = None) -> str:
    """Markdown: the accuracy table of an `llm-codec evaluate fewshot` results.json (every setting and method)."""
    results = json.loads(Path(path).read_text())["results"]
    first = results[0]
    rows = [f"| {r['n_way']}-way {r['k_shot']}-shot | {r['method']} | {r['accuracy']:.2f} "
            f"[{r['ci_low']:.2f}-{r['ci_high']:.2f}] | {r['chance']:.2f} | {r['n']} |" for r in results]
    return (
        f"`{first['task']}`{f' ({description})' if description else ''}, {first['episodes']} episodes per setting, {first['n_queries']} queries per class, seed "
        f"{first['seed']}; {lm_name} reading the layer-1 words as text (`llm-codec evaluate fewshot --model "
        "shipped:semantic --audio-format text`). icl: the LM scores each label after the demonstrations; calibrated: "
        "the same divided by a content-free query's label probabilities; codes: the nearest class prototype of the "
        "words' histograms (no LM); logmel: the nearest class prototype of log-mel statistics (no codec, no LM: the "
        "no-learning reference). Accuracy with its 95 % Wilson interval.\n\n"
        "| setting | method | accuracy | chance | queries |\n| --- | --- | --- | --- | --- |\n" + "\n".join(rows)
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("source", help="a complete grouped codec folder (save_pretrained / export_checkpoint.py)")
    parser.add_argument("--heldout", nargs=3, action="append", default=[], metavar=("NAME", "OURS", "DEFAULT"),
                        help="a held-out set for the model card: its name, this codec's and the default codec's "
                        "`evaluate codec` results.json on the same clips (repeatable)")
    parser.add_argument("--fewshot", default=None, metavar="RESULTS_JSON",
                        help="`evaluate fewshot` results of this codec, summarised in the model card")
    parser.add_argument("--fewshot-lm", default="Qwen2.5-Coder-1.5B-Instruct", help="the LM of --fewshot")
    parser.add_argument("--fewshot-description", default=None, help="what the --fewshot task is, for the card")
    parser.add_argument("--output", default=None, help="write the folder here (default: the package's "
                        "llm_codec/assets/semantic_codec/, which the check then loads)")
    args = parser.parse_args(argv)

    from llm_codec import LLMCodecConfig, LLMCodecModel, example_audio_path
    from llm_codec.audio_io import read_audio
    from llm_codec.default_model import (
        DEFAULT_CODEC_ARCH, WEIGHTS_NAME, default_codec_dir, load_semantic_codec, semantic_codec_dir,
    )
    from llm_codec.language_model import load_language_model
    from llm_codec.model_card import build_model_card
    from llm_codec.modeling_llm_codec import is_rebuilt_weight
    from llm_codec.training.export import weights_without_codebooks

    source = LLMCodecModel.from_pretrained(args.source).eval()
    config = source.config
    default = LLMCodecConfig.from_pretrained(default_codec_dir())  # the default codec's config: no need to build it
    wrong = [k for k in DEFAULT_CODEC_ARCH if getattr(config, k) != getattr(default, k)]
    if wrong or config.llm_vocab_fingerprint != default.llm_vocab_fingerprint:
        raise SystemExit(f"{args.source} is not the default codec's architecture and vocabulary ({wrong}).")
    if config.semantic_teacher != "resemblyzer" or not config.semantic_groups:
        raise SystemExit(f"{args.source} is not a grouped codec with the Resemblyzer teacher.")
    if not source.quantizer.layers[0].groups_fitted or not source.semantic.is_fitted:
        raise SystemExit(f"{args.source}: its centroids or word groups were never fitted.")

    folder = Path(args.output) if args.output else semantic_codec_dir()
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v for k, v in weights_without_codebooks(source).items() if not is_rebuilt_weight(k)}  # no teacher
    save_file(weights, str(folder / WEIGHTS_NAME), metadata={"source": Path(args.source).name})
    (folder / WEIGHTS_NAME).chmod(0o644)
    config.to_json_file(str(folder / "config.json"))  # the config alone: this folder is not a complete checkpoint

    shipped, _ = load_semantic_codec(*load_language_model(), folder=folder)
    audio = torch.from_numpy(read_audio(example_audio_path(), 16000))[None, None]
    expected, got = source.encode(audio).audio_codes, shipped.encode(audio).audio_codes
    if any(not torch.equal(a, b) for a, b in zip(expected, got)):
        raise SystemExit("The shipped copy does not give the source folder's codes: not shipped as it is.")
    decoded = [m.decode(expected, generator=torch.Generator().manual_seed(0)).audio_values for m in (source, shipped)]
    if not torch.allclose(decoded[0], decoded[1], atol=1e-5):
        raise SystemExit("The shipped copy does not decode like the source folder.")

    sections = {
        "Why a second codec": (
            "The default codec's layer-1 words follow the waveform, so a query rarely shares words with the "
            "demonstrations of its class and a frozen LM does not learn from them in context. Here the frozen "
            "Resemblyzer voice encoder chooses, at every layer-1 position (8.33 per second), one of "
            f"{config.semantic_clusters} groups of words, and the codec's latent the word within the group. An LM "
            "reading layer 1 for understanding reads each word's group head: a few slowly varying words per clip "
            "that follow who or what is heard. With Qwen2.5-Coder-1.5B-Instruct reading them as text, speaker "
            "identification from a few demonstrations is above a log-mel prototype baseline (below, and "
            "`docs/results.md` of the project); on notes, languages and sound events the teacher's words carry "
            "little."
        ),
        "Training": (
            "The default codec's weights with this layer 1 (centroids fitted on 794 unlabelled, kind-balanced "
            "training clips), then about 7 000 steps on a 2-core CPU around it (mel, STFT, VQ and STOI losses, more "
            "read speech, then larger batches): the grouped-words section of the project's `docs/results.md`."
        ),
    }
    if args.fewshot:
        sections["Few-shot classification"] = fewshot_section(args.fewshot, args.fewshot_lm, args.fewshot_description)
    if args.heldout:
        sections["Reconstruction"] = heldout_section(args.heldout)
    usage = (
        "```python\nfrom llm_codec.default_model import load_semantic_codec  # pip install --no-deps Resemblyzer==0.1.4\n\n"
        "codec, (lm, tokenizer) = load_semantic_codec()\n```\n\nOn the command line: `--model shipped:semantic`, "
        "e.g. `llm-codec demo --model shipped:semantic --lm Qwen/Qwen2.5-Coder-1.5B-Instruct --audio-format text`."
    )
    card = build_model_card(config, sections, usage=usage, model_name="LLM-Codec, semantic layer 1 (SmolLM2-135M)")
    card.save(str(folder / "README.md"))
    print(f"{folder}: {len(weights)} tensors, {(folder / WEIGHTS_NAME).stat().st_size / 2**20:.1f} MiB; the shipped "
          "copy gives the source's codes and audio on the example clip")


if __name__ == "__main__":
    main()
