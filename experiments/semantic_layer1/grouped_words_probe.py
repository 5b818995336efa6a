"""Feasibility of "grouped words" (design 3): the teacher chooses a *group* of layer-1 words, the encoder the word.

Design 2 makes layer 1 one of 16 teacher words, which costs reconstruction (layer 1 stops carrying acoustics). Here
the shipped codec's 3966 layer-1 words are split into one group per centroid, each centroid's design-2 word heading
its own group (`--partition dealt`: the package's `training.group_layer1_words`; `random`: a seeded random
equal-size partition); at every layer-1 position the teacher's nearest centroid picks the group and the encoder's
latent the nearest word *within* it. An LM still reads the teacher's words (each layer-1 word written as its group's
head), while the decoder keeps most of layer 1's acoustic information.

This probe measures the reconstruction cost without any training: the shipped codec's dev-clip PESQ-WB / STOI / mel
distance with (a) free layer 1 (the shipped codec), (b) grouped layer 1, (c) design 2's untrained layer 1 (the head
word only), on the trainer's development clips (first 4 s of the first 29 of data/dev_speech.jsonl, decoder noise
seed 0).

    python experiments/semantic_layer1/grouped_words_probe.py --semantic runs/design2_layer1

This is an experiment, not part of the package.
"""

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from llm_codec import LLMCodecModel
from llm_codec.default_model import DEFAULT_CODEC_ARCH, load_default_codec
from llm_codec.evaluation.metrics import speech_scores
from llm_codec.training import TrainingConfig, group_layer1_words
from llm_codec.training.build import resolve_word_list
from llm_codec.training.data import load_validation_clips, resolve_sources
from llm_codec.mel import MultiScaleMelLoss


def random_groups(codebook_size: int, head_words: list[int], seed: int) -> torch.LongTensor:
    """Word -> group index: a seeded random equal-size partition with head word c in group c."""
    clusters = len(head_words)
    rest = [w for w in range(codebook_size) if w not in set(head_words)]
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed)).tolist()
    groups = torch.empty(codebook_size, dtype=torch.long)
    for c, w in enumerate(head_words):
        groups[w] = c
    for i, j in enumerate(order):
        groups[rest[j]] = i % clusters
    return groups


@torch.no_grad()
def coverage_groups(codec, design2, sources, head_words: list[int], seed: int, clips: int = 200,
                    samples: int = 4000) -> torch.LongTensor:
    """Word -> group index, chosen for the latents that occur: the pooled layer-1 latents of `clips` fitting clips
    (first 8 s; `samples` of them drawn with `seed`) are the points to cover; starting from its head word, each group
    in turn takes the unassigned word that raises most the summed best cosine of those points within the group
    (greedy facility location, round-robin so that the groups stay equal in size)."""
    from llm_codec.audio_io import read_audio

    layer = codec.quantizer.layers[0]
    table, inv_norm = layer.search_table()
    table = table * inv_norm[:, None]
    points = []
    for source in sources[:clips]:
        x = torch.from_numpy(read_audio(source, 16000, 8.0))[None, None]
        latents = codec._encode_batch_latents(codec._pad(x), torch.tensor([x.shape[-1]]))
        points.append(F.normalize(F.avg_pool1d(latents, layer.stride, layer.stride)[0].T.float(), dim=-1))
    points = torch.cat(points)
    points = points[torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:samples]]
    similarity = points @ table.T  # (points, words)
    groups = torch.full((table.shape[0],), -1, dtype=torch.long)
    best = []
    for c, w in enumerate(head_words):
        groups[w] = c
        best.append(similarity[:, w].clone())
    free = groups < 0
    while bool(free.any()):
        for c in range(len(head_words)):
            if not bool(free.any()):
                break
            gain = (similarity - best[c][:, None]).clamp_min(0).sum(0).masked_fill(~free, -1.0)
            w = int(gain.argmax())
            groups[w], free[w] = c, False
            best[c] = torch.maximum(best[c], similarity[:, w])
    return groups


@torch.no_grad()
def grouped_first_codes(codec, latents, group_per_position, groups):
    layer = codec.quantizer.layers[0]
    pooled = F.avg_pool1d(latents, layer.stride, layer.stride)
    table, inv_norm = layer.search_table()
    sims = F.normalize(pooled.float().transpose(1, 2), dim=-1) @ table.T * inv_norm  # (batch, positions, words)
    allowed = groups[None, None, :] == group_per_position[..., None]
    return sims.masked_fill(~allowed, float("-inf")).argmax(-1)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--semantic", default="runs/design2_layer1", help="a design-2 codec folder (its centroids)")
    parser.add_argument("--config", default="experiments/semantic_layer1/design2_cpu.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partition", choices=["random", "dealt", "coverage"], default="dealt")
    parser.add_argument("--word-list", type=int, choices=[10, 20], default=10,
                        help="layer-1 word list: 10 (the shipped 3966 words) or 20 (SCOWL size 20, more words)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = TrainingConfig.from_file(args.config)
    shipped, _, (lm, tokenizer) = load_default_codec()
    shipped.eval()
    design2 = LLMCodecModel.from_pretrained(args.semantic).eval()
    head = design2.semantic.word_codes.tolist()
    to_codec = {c: c for c in head}  # design-2 head codes -> codes of the grouped codec's layer 1
    codec = shipped
    if args.word_list != 10:  # the shipped weights with a larger layer-1 word list (same projection, more words)
        arch = {k: getattr(shipped.config, k) for k in DEFAULT_CODEC_ARCH}
        codec = LLMCodecModel.from_language_model(lm, tokenizer, word_list=resolve_word_list(args.word_list),
                                                  **arch).eval()
        state = {k: v for k, v in shipped.state_dict().items() if not k.endswith(".codebook")}
        missing, unexpected = codec.load_state_dict(state, strict=False)
        assert not unexpected and all(k.endswith(".codebook") for k in missing), (missing, unexpected)
        words = codec.config.layer1_words
        to_codec = {c: words.index(design2.config.layer1_words[c]) for c in head}
        head = [to_codec[c] for c in head]
    if args.partition == "coverage":
        sources = resolve_sources(config.semantic_fit_data)
        order = torch.randperm(len(sources), generator=torch.Generator().manual_seed(args.seed)).tolist()
        groups = coverage_groups(codec, design2, [sources[i] for i in order], head, args.seed)
    elif args.partition == "random":
        groups = random_groups(codec.config.codebook_sizes[0], head, args.seed)
    else:
        heads = group_layer1_words(codec, head, seed=args.seed)  # the package's partition (head word per word)
        groups = torch.tensor([head.index(h) for h in heads.tolist()])
    clips = load_validation_clips(resolve_sources(config.val_data), 16000, config.val_seconds, config.num_val_clips)
    mel_loss = MultiScaleMelLoss(16000, config.mel_window_lengths, config.mel_n_mels)
    rows = {"shipped": [], "free": [], "grouped": [], "head_word_only": []}
    for clip in clips:
        lengths = torch.tensor([clip.shape[-1]])
        latents = shipped._encode_batch_latents(shipped._pad(clip), lengths)
        head_codes = design2.semantic_codes(clip, lengths, latents.shape[-1])  # word codes of the centroids
        head_codes = head_codes.apply_(to_codec.get)
        group_of_position = groups[head_codes]
        variants = {  # (codec, layer-1 codes): the shipped codec, then this word list's free / grouped / head-only
            "shipped": (shipped, None),
            "free": (codec, None),
            "grouped": (codec, grouped_first_codes(codec, latents, group_of_position, groups)),
            "head_word_only": (codec, head_codes),
        }
        for name, (model, first) in variants.items():
            _, codes, *_ = model.quantizer(latents, first_codes=first)
            audio = model.decode(codes, generator=torch.Generator().manual_seed(0)).audio_values[..., : clip.shape[-1]]
            values, _ = speech_scores(clip[0, 0].numpy(), audio[0, 0].float().numpy(), 16000)
            values["mel_distance"] = float(mel_loss(audio.float(), clip))
            rows[name].append(values)
    summary = {name: {m: float(np.nanmean([r[m] for r in values])) for m in values[0]} for name, values in rows.items()}
    print(json.dumps({"clips": len(clips), "groups": len(head), "seed": args.seed, "partition": args.partition,
                      "layer1_words": codec.config.codebook_sizes[0], "mean": summary}, indent=2))


if __name__ == "__main__":
    main()
