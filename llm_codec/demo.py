"""The main job: round-trip the bundled speech clip through the default codec and show its LLM tokens."""

import argparse
import time
from pathlib import Path

import torch


def run_demo(output_dir: str = "outputs", audio_path: str | None = None, max_words: int = 24) -> dict:
    """
    Encodes a clip (default: the bundled speech), prints its codes as the default LM's tokens, decodes it, and
    writes `reconstruction.wav` and `spectrogram.png` (original vs reconstruction) to `output_dir`.
    Returns a summary dict (paths, token counts, timings).
    """
    from . import example_audio_path
    from .audio_io import load_audio, save_audio
    from .default_model import load_default_codec
    from .plotting import plot_spectrograms
    from .processing_llm_codec import LLMCodecProcessor

    torch.set_grad_enabled(False)
    start = time.perf_counter()
    print("Loading the default LM (SmolLM2-135M-Instruct, offline; converted once per machine) and the codec ...")
    codec, trained, (lm, tokenizer) = load_default_codec()
    config = codec.config
    print(
        f"Codec: {sum(p.numel() for p in codec.parameters()) / 1e6:.1f} M trained parameters, codebooks "
        f"{config.codebook_sizes} x {config.codebook_dim} from {config.llm_name_or_path} "
        f"({'trained weights' if trained else 'UNTRAINED: random encoder/decoder, reconstruction is not speech yet'})"
    )
    print(f"Token rates {[round(r, 2) for r in config.tokens_per_second]} codes/s per layer, {config.bitrate:.0f} bit/s")
    processor = LLMCodecProcessor.from_codec(codec, tokenizer)
    path = audio_path or example_audio_path()
    audio, rate = load_audio(path)
    inputs = processor(audio=audio, sampling_rate=rate, return_tensors="pt")
    encoded = codec.encode(**inputs)
    seconds = inputs["input_values"].shape[-1] / config.sample_rate
    print(f"\nAudio: {path} ({seconds:.2f} s)")
    words = processor.codes_to_words(encoded.audio_codes[0])[0]
    print(f"Layer 1 ({len(words)} codes) as words: {' '.join(words[:max_words])}{' ...' if len(words) > max_words else ''}")
    ids = processor.codes_to_ids(encoded.audio_codes, layers=(0,))[0]
    print(f"  = {len(ids)} LLM token ids: {ids[:max_words]}{' ...' if len(ids) > max_words else ''}")
    for k in (1, 2):
        tokens = tokenizer.convert_ids_to_tokens(encoded.audio_codes[k][0, :max_words].tolist())
        print(f"Layer {k + 1} ({encoded.audio_codes[k].shape[1]} codes) as LLM tokens: {tokens} ...")
    decoded = codec.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths).audio_values[0, 0]
    output = Path(output_dir)
    wav = save_audio(output / "reconstruction.wav", decoded, config.sample_rate)
    png = plot_spectrograms(
        {"original": inputs["input_values"][0, 0].numpy(), "reconstruction": decoded.numpy()},
        config.sample_rate,
        output / "spectrogram.png",
        title=f"LLM-Codec ({'trained' if trained else 'untrained'}) at {config.bitrate:.0f} bit/s",
    )
    print(f"\nWrote {wav} and {png} in {time.perf_counter() - start:.1f} s")
    return {"trained": trained, "wav": str(wav), "png": str(png), "layer1_words": words, "ids": ids}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default="outputs")
    parser.add_argument("--audio", default=None, help="another clip to use instead of the bundled one")
    args = parser.parse_args(argv)
    run_demo(args.output_dir, args.audio)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
