"""Is the cost of grouped layer-1 words in a few words every group lacks, such as the ones for silence?

A grouped codec may only use the words of the teacher's group at each layer-1 position. Fewer, larger groups did not
lower its PESQ-WB cost (experiments/README.md), which would fit a cost concentrated in a few positions, for example
quiet ones, where the free rule uses a handful of words that most groups lack. This probe lets every group also use
a shared set of words: the N words the free rule picks most often on fitting clips (not the development clips), or
the N it picks most often on their quiet positions. An LM would read a shared word as itself (a word of its own,
collapsed like the others), so the teacher's words stay as they are elsewhere.

No training: the untrained grouped codec (`runs/grouped_step0`: the shipped weights with design 2's centroids and
`dealt` groups), the trainer's development clips (first 4 s of the first 29), decoder noise seed 0.

    python experiments/semantic_layer1/shared_words_probe.py --shared 0 16 64 256

This is an experiment, not part of the package.
"""

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from llm_codec import LLMCodecModel
from llm_codec.audio_io import read_audio
from llm_codec.evaluation.metrics import speech_scores
from llm_codec.mel import MultiScaleMelLoss
from llm_codec.training import TrainingConfig
from llm_codec.training.data import load_validation_clips, resolve_sources


@torch.no_grad()
def word_counts(codec, sources, quiet_db: float | None, seconds: float = 8.0):
    """How often the free rule picks each layer-1 word on `sources` (first `seconds`), on every position or, with
    `quiet_db`, only where the position's audio RMS is more than `quiet_db` dB under the clip's loudest position."""
    layer = codec.quantizer.layers[0]
    counts = torch.zeros(layer.codebook_size)
    samples = codec.config.hop_length * layer.stride
    for source in sources:
        audio = torch.from_numpy(read_audio(source, 16000, seconds))[None, None]
        latents = codec._encode_batch_latents(codec._pad(audio), torch.tensor([audio.shape[-1]]))
        codes = layer.lookup(F.avg_pool1d(latents, layer.stride, layer.stride))[0]
        if quiet_db is not None:
            padded = F.pad(audio[0, 0], (0, codes.shape[0] * samples - audio.shape[-1]))
            rms = padded[: codes.shape[0] * samples].view(-1, samples).pow(2).mean(1).sqrt()
            level = 20 * torch.log10(rms.clamp_min(1e-8) / rms.max().clamp_min(1e-8))
            codes = codes[level < -quiet_db]
        counts += torch.bincount(codes, minlength=layer.codebook_size).float()
    return counts


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grouped", default="runs/grouped_step0")
    parser.add_argument("--config", default="experiments/semantic_layer1/grouped_cpu.yaml")
    parser.add_argument("--shared", nargs="+", type=int, default=[0, 16, 64, 256])
    parser.add_argument("--quiet-db", type=float, default=None,
                        help="rank the shared words on quiet positions only (this far under the loudest)")
    parser.add_argument("--fit-clips", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainingConfig.from_file(args.config)
    codec = LLMCodecModel.from_pretrained(args.grouped).eval()
    layer = codec.quantizer.layers[0]
    sources = resolve_sources(config.semantic_fit_data)
    order = torch.randperm(len(sources), generator=torch.Generator().manual_seed(0)).tolist()
    counts = word_counts(codec, [sources[i] for i in order[: args.fit_clips]], args.quiet_db)
    ranking = counts.argsort(descending=True)
    clips = load_validation_clips(resolve_sources(config.val_data), 16000, config.val_seconds, config.num_val_clips)
    mel_loss = MultiScaleMelLoss(16000, config.mel_window_lengths, config.mel_n_mels)
    table, inv_norm = layer.search_table()
    report = {}
    for n in args.shared:
        shared = torch.zeros(layer.codebook_size, dtype=torch.bool)
        shared[ranking[:n]] = True
        rows, shared_share = [], []
        for clip in clips:
            lengths = torch.tensor([clip.shape[-1]])
            latents = codec._encode_batch_latents(codec._pad(clip), lengths)
            heads = codec.semantic_codes(clip, lengths, latents.shape[-1])[0]
            pooled = F.avg_pool1d(latents, layer.stride, layer.stride)[0].T.float()
            scores = F.normalize(pooled, dim=1) @ table.T * inv_norm
            allowed = (layer.word_heads[None, :] == heads[:, None]) | shared[None, :]
            first = scores.masked_fill(~allowed, float("-inf")).argmax(1)[None]
            shared_share.append(float(shared[first[0]].float().mean()))
            codes = [first]  # layers 2-3 quantize what this layer 1 leaves, as the quantizer does
            residual = latents - layer.embed(first).repeat_interleave(layer.stride, dim=-1)
            for later in codec.quantizer.layers[1:]:
                quantized, later_codes, _, _ = later(residual)
                residual = residual - quantized
                codes.append(later_codes)
            audio = codec.decode(tuple(codes), generator=torch.Generator().manual_seed(0)).audio_values
            audio = audio[..., : clip.shape[-1]]
            values, _ = speech_scores(clip[0, 0].numpy(), audio[0, 0].float().numpy(), 16000)
            values["mel_distance"] = float(mel_loss(audio.float(), clip))
            rows.append(values)
        mean = {m: round(float(np.nanmean([r[m] for r in rows])), 4) for m in ("pesq_wb", "stoi", "mel_distance")}
        mean["positions_on_shared_words"] = round(float(np.mean(shared_share)), 3)
        report[str(n)] = mean
        print(f"shared {n}: {mean}", flush=True)
    print(json.dumps({"clips": len(clips), "quiet_db": args.quiet_db, "fit_clips": args.fit_clips,
                      "shared_words_top8": [codec.config.layer1_words[int(w)] for w in ranking[:8]],
                      "results": report}, indent=2))


if __name__ == "__main__":
    main()
