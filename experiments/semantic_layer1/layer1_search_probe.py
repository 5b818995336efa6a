"""Does a wider layer-1 search at encoding win back what grouping costs?

Every codec layer picks its word greedily, by cosine, one layer after the other. Layer 1 covers 4 latent frames, and
layers 2 and 3 nest inside its windows, so the choice at one layer-1 position only changes the residual of its own 4
frames. That makes a small exact search possible: for each position, try the `--candidates` best layer-1 words by
cosine (within the teacher's group for a grouped codec), let layers 2 and 3 choose greedily as usual for each, and
keep the candidate whose three layers together leave the smallest squared error to the latent.

Reports the trainer's development metrics (first 4 s of the first 29 clips of the dev set, decoder noise seed 0) for
each codec with the greedy rule and with the search.

    python experiments/semantic_layer1/layer1_search_probe.py --models default runs/grouped_bigbatch_step449 \
        --candidates 1 4 16

This is an experiment, not part of the package.
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from llm_codec import LLMCodecModel
from llm_codec.default_model import load_default_codec
from llm_codec.evaluation.metrics import speech_scores
from llm_codec.mel import MultiScaleMelLoss
from llm_codec.training import TrainingConfig
from llm_codec.training.data import load_validation_clips, resolve_sources


@torch.no_grad()
def searched_codes(codec, latents: torch.Tensor, heads: torch.LongTensor | None, candidates: int):
    """`latents` (1, dim, frames) -> the three layers' codes, layer 1 chosen among its `candidates` best words (by
    cosine, within `heads`' groups when given) for the smallest error after layers 2 and 3. `latents` may also be a
    target other than the encoder's latent (`--target free`)."""
    layers = codec.quantizer.layers
    first = layers[0]
    stride = first.stride
    dim, frames = latents.shape[1], latents.shape[2]
    positions = frames // stride
    table, inv_norm = first.search_table()
    pooled = F.avg_pool1d(latents, stride, stride)[0].T.float()  # (positions, dim)
    scores = F.normalize(pooled, dim=1) @ table.T * inv_norm
    if heads is not None:
        scores = scores.masked_fill(first.word_heads[None, :] != heads[0][:, None], float("-inf"))
    top = scores.topk(candidates, dim=1).indices  # (positions, candidates)
    # residual of each position's 4 frames under each candidate: (positions * candidates, dim, stride)
    windows = latents[0].float().T.reshape(positions, stride, dim)
    residual = (windows[:, None] - table[top][:, :, None, :]).reshape(-1, stride, dim).transpose(1, 2)
    later_codes = []
    for layer in layers[1:]:
        quantized, codes, _, _ = layer(residual)
        residual = residual - quantized.float()
        later_codes.append(codes)
    error = residual.pow(2).sum((1, 2)).view(positions, candidates)
    best = error.argmin(1)
    index = torch.arange(positions) * candidates + best
    out = [top[torch.arange(positions), best][None]]
    for codes in later_codes:
        per = codes.shape[1]
        out.append(codes[index].reshape(1, positions * per))
    return tuple(out)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["default"])
    parser.add_argument("--candidates", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--config", default="experiments/semantic_layer1/grouped_cpu.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", choices=["latent", "free"], default="latent",
                        help="what the three layers approximate: the encoder's latent, or (free) the latent as the "
                        "codec's own free rule quantizes it, i.e. what the decoder was trained on (meaningful for an "
                        "untrained grouped codec, whose decoder is the shipped one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainingConfig.from_file(args.config)
    clips = load_validation_clips(resolve_sources(config.val_data), 16000, config.val_seconds, config.num_val_clips)
    mel_loss = MultiScaleMelLoss(16000, config.mel_window_lengths, config.mel_n_mels)
    report = {}
    for name in args.models:
        codec = load_default_codec()[0] if name == "default" else LLMCodecModel.from_pretrained(name)
        codec.eval()
        for k in args.candidates:
            rows, errors, seconds = [], [], 0.0
            for clip in clips:
                lengths = torch.tensor([clip.shape[-1]])
                latents = codec._encode_batch_latents(codec._pad(clip), lengths)
                heads = codec.semantic_codes(clip, lengths, latents.shape[-1])
                start = time.perf_counter()
                target = latents
                if args.target == "free":
                    target = codec.quantizer(latents)[0]  # no group restriction: the free rule's quantized latent
                if k == 1 and args.target == "latent":
                    _, codes, *_ = codec.quantizer(latents, first_codes=heads)
                else:
                    codes = searched_codes(codec, target, heads, k)
                seconds += time.perf_counter() - start
                errors.append(float((codec.quantizer.from_codes(codes).float() - latents.float()).pow(2).mean()))
                audio = codec.decode(codes, generator=torch.Generator().manual_seed(0)).audio_values
                audio = audio[..., : clip.shape[-1]]
                values, _ = speech_scores(clip[0, 0].numpy(), audio[0, 0].float().numpy(), 16000)
                values["mel_distance"] = float(mel_loss(audio.float(), clip))
                rows.append(values)
            mean = {m: round(float(np.nanmean([r[m] for r in rows])), 4) for m in ("pesq_wb", "stoi", "mel_distance")}
            mean["latent_mse"] = round(float(np.mean(errors)), 5)
            mean["quantize_s"] = round(seconds, 2)
            report[f"{name} k={k} target={args.target}"] = mean
            print(f"{name} k={k} target={args.target}: {mean}", flush=True)
    print(json.dumps({"clips": len(clips), "results": report}, indent=2))


if __name__ == "__main__":
    main()
