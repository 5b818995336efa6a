"""Fitting a teacher-computed first layer (`LLMCodecConfig.semantic_teacher`): the centroids its teacher's window
embeddings are assigned to, and the layer-1 word written for each centroid.

The centroids come from spherical k-means over the teacher's window embeddings of unlabelled clips (the codec's
training audio); each centroid gets a distinct layer-1 word drawn with a fixed seed (among the words that are one
token for a given tokenizer, when one is passed, so prompts stay short). With `LLMCodecConfig.semantic_groups` the
layer-1 words are also split into one group per centroid, headed by the centroid's word (`group_layer1_words`).
Also: `add_semantic_layer1`, which turns a
trained codec into one whose layer 1 is computed by the teacher (the other weights are kept; layers 2-3 and the
decoder then need training around the new layer 1).
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..audio_io import read_audio
from ..modeling_llm_codec import LLMCodecModel


def spherical_kmeans(vectors: torch.Tensor, clusters: int, iterations: int = 30, seed: int = 0,
                     restarts: int = 4) -> torch.Tensor:
    """
    Cosine k-means with k-means++ seeding and restarts.

    Args:
        vectors (`torch.FloatTensor` of shape `(n, dim)`): the points (normalised here).
        clusters (`int`): number of centroids, at most `n`.
        iterations (`int`, defaults to 30): Lloyd iterations per start; an empty cluster is re-seeded with the point
            farthest from its centroid.
        seed (`int`, defaults to 0): seed of the k-means++ draws (the first centroid at random, each next one with
            probability proportional to the squared cosine distance to the nearest centroid so far).
        restarts (`int`, defaults to 4): independent starts; the one with the smallest total cosine distance wins.

    Returns:
        `torch.FloatTensor` of shape `(clusters, dim)`: unit centroids.
    """
    if not 1 <= clusters <= len(vectors):
        raise ValueError(f"Cannot fit {clusters} centroids to {len(vectors)} vectors: give more audio or fewer clusters.")
    generator = torch.Generator().manual_seed(seed)
    points = F.normalize(vectors.float(), dim=-1)
    best, best_cost = None, float("inf")
    for _ in range(max(1, restarts)):
        centroids = points[torch.randint(len(points), (1,), generator=generator)]
        for _ in range(1, clusters):
            distance = (1 - (points @ centroids.T).max(1).values).clamp_min(0).square()
            if float(distance.sum()) <= 0:  # fewer distinct points than clusters: any point
                index = torch.randint(len(points), (1,), generator=generator)
            else:
                index = torch.multinomial(distance, 1, generator=generator)
            centroids = torch.cat([centroids, points[index]])
        for _ in range(iterations):
            similarity = points @ centroids.T
            assign = similarity.argmax(1)
            for c in range(clusters):
                members = points[assign == c]
                if len(members):
                    centroids[c] = members.mean(0)
                else:
                    centroids[c] = points[similarity.max(1).values.argmin()]
            centroids = F.normalize(centroids, dim=-1)
        cost = float((1 - (points @ centroids.T).max(1).values).sum())
        if cost < best_cost:
            best, best_cost = centroids, cost
    return best


def choose_layer1_words(codec: LLMCodecModel, count: int, seed: int = 1, tokenizer=None) -> list[int]:
    """
    `count` distinct layer-1 codes (indices into `config.layer1_words`) drawn with `seed`; with a `tokenizer`, only
    among the words it encodes (after a space) as one token. Raises `ValueError` when there are too few.
    """
    words = codec.config.layer1_words or [str(i) for i in range(codec.config.codebook_sizes[0])]
    candidates = list(range(len(words)))
    if tokenizer is not None:
        candidates = [i for i in candidates if len(tokenizer(" " + words[i], add_special_tokens=False)["input_ids"]) == 1]
    if len(candidates) < count:
        raise ValueError(f"Only {len(candidates)} layer-1 words qualify, {count} are needed: use fewer clusters.")
    return sorted(random.Random(seed).sample(candidates, count))


@torch.no_grad()
def fit_semantic_layer1(codec: LLMCodecModel, clips, seconds: float | None = 8.0, seed: int = 0, tokenizer=None,
                        progress: bool = True) -> dict:
    """
    Fits the centroids and words of a codec whose layer 1 is teacher-computed, in place.

    Args:
        codec (`LLMCodecModel`): with `config.semantic_teacher` set and the teacher's weights loaded.
        clips: audio sources (paths or encoded bytes, read at the codec's rate) or 1-D numpy arrays / torch tensors
            of samples at 16 kHz; unlabelled, ideally the kinds of audio the codec will see (speech, music, sound
            events).
        seconds (`float`, *optional*, defaults to 8): read at most this much of each clip (`None`: all).
        seed (`int`, defaults to 0): k-means seed; the words are drawn with `seed + 1`.
        tokenizer (*optional*): prefer words that are one token for it (the LM that will read them).
        progress (`bool`, defaults to `True`): a tqdm bar over the clips.

    Returns:
        `dict`: `windows` (embeddings fitted), `clips`, `clusters_used` (centroids that got at least one window),
        `word_codes` (the chosen layer-1 codes).
    """
    if codec.semantic is None:
        raise ValueError("This codec has no teacher-computed layer 1: build it with `semantic_teacher` set "
                         "(or use `add_semantic_layer1`).")
    layer = codec.semantic
    sample_rate = codec.config.sample_rate
    embeddings = []
    for clip in tqdm(list(clips), desc="semantic layer 1: teacher windows", disable=not progress):
        if isinstance(clip, (np.ndarray, torch.Tensor)):  # samples at the codec's rate
            audio = np.asarray(clip, dtype=np.float32).reshape(-1)[: None if seconds is None else round(seconds * sample_rate)]
        else:  # a path or encoded bytes
            audio = read_audio(clip, sample_rate, seconds)
        if audio.size == 0:
            continue
        audio = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(layer.centroids.device)
        embeddings.append(layer.window_embeddings(audio))
    if not embeddings:
        raise ValueError("No audio to fit the semantic layer on.")
    windows = torch.cat(embeddings).cpu()
    clusters = codec.config.semantic_clusters
    centroids = spherical_kmeans(windows, clusters, seed=seed)
    word_codes = choose_layer1_words(codec, clusters, seed=seed + 1, tokenizer=tokenizer)
    layer.centroids.copy_(centroids.to(layer.centroids))
    layer.word_codes.copy_(torch.tensor(word_codes, device=layer.word_codes.device))
    used = int((windows @ centroids.T).argmax(1).unique().numel())
    stats = dict(windows=len(windows), clips=len(embeddings), clusters_used=used, word_codes=word_codes)
    if codec.config.semantic_groups:
        word_heads = fit_layer1_groups(codec, seed=seed)
        stats["group_sizes"] = [int((word_heads == w).sum()) for w in word_codes]
    return stats


@torch.no_grad()
def fit_layer1_groups(codec: LLMCodecModel, seed: int = 0) -> torch.LongTensor:
    """
    Fits, in place, the layer-1 word groups of a codec with `semantic_groups` around its (fitted) centroid words
    `semantic.word_codes` (`group_layer1_words` on its current layer-1 table) and returns them, `(codebook_size,)`.
    """
    word_heads = group_layer1_words(codec, codec.semantic.word_codes.tolist(), seed=seed)
    first = codec.quantizer.layers[0]
    first.word_heads.copy_(word_heads.to(first.word_heads.device))
    return word_heads


def groups_headed_by(word_heads: torch.Tensor, word_codes: torch.Tensor) -> bool:
    """Whether `word_heads` `(codebook_size,)` (`quantizer.layers.0.word_heads`) splits the layer-1 words into one group
    per code of `word_codes` `(clusters,)`, each headed by that code: every word is in a group (no -1), the heads are
    exactly `word_codes`, and each head is in its own group."""
    word_heads, word_codes = torch.as_tensor(word_heads).long(), torch.as_tensor(word_codes).long()
    return sorted(set(word_heads.tolist())) == sorted(word_codes.tolist()) and \
        torch.equal(word_heads[word_codes], word_codes)


@torch.no_grad()
def group_layer1_words(codec: LLMCodecModel, head_words: list[int], seed: int = 0) -> torch.LongTensor:
    """
    Splits the layer-1 words into `len(head_words)` groups of (nearly) equal size, group c headed by `head_words[c]`,
    such that every group has words in every part of the latent space: the words' projected vectors (layer 1's
    search table) are clustered into cells of about one word per group (spherical k-means, `seed`), and each cell's
    words are dealt in turn to the group holding the fewest so far. Whatever group the teacher chooses, the latent
    then finds a word near it, so layer 1 keeps most of its acoustic detail.

    Returns:
        `torch.LongTensor` of shape `(codebook_size,)`: the head word of each word's group (the value of
        `quantizer.layers.0.word_heads`).
    """
    table = codec.quantizer.layers[0].search_table()[0].detach().float().cpu()
    size, groups = table.shape[0], len(head_words)
    if len(set(head_words)) != groups or not all(0 <= w < size for w in head_words):
        raise ValueError(f"`head_words` must be {groups} distinct layer-1 codes (0..{size - 1}).")
    cells = max(1, size // groups)
    centroids = spherical_kmeans(table, cells, seed=seed, restarts=1)
    cell_of_word = (F.normalize(table, dim=-1) @ centroids.T).argmax(1).tolist()
    word_heads = torch.full((size,), -1, dtype=torch.long)
    counts = [1] * groups
    word_heads[head_words] = torch.tensor(head_words)
    by_cell: dict[int, list[int]] = {}
    for w, cell in enumerate(cell_of_word):
        if word_heads[w] < 0:
            by_cell.setdefault(cell, []).append(w)
    for cell in sorted(by_cell):
        for w in by_cell[cell]:
            c = min(range(groups), key=counts.__getitem__)
            word_heads[w] = head_words[c]
            counts[c] += 1
    return word_heads


def draw_fit_clips(sources, count: int, seed: int = 0) -> list:
    """The first `count` of `sources` (a sequence of audio sources) after a shuffle with `seed`: the clips a training
    run fits its semantic layer 1 on (`TrainingConfig.semantic_fit_clips`)."""
    order = list(range(len(sources)))
    random.Random(seed).shuffle(order)
    return [sources[i] for i in order[:count]]


def add_semantic_layer1(codec: LLMCodecModel, teacher: str = "resemblyzer", clusters: int = 16,
                        teacher_weights=None, groups: bool = False) -> LLMCodecModel:
    """
    A copy of `codec` whose layer 1 is computed by `teacher` (`LLMCodecConfig.semantic_teacher`), with every other
    weight and buffer of `codec` and the teacher's weights loaded (from the installed package, or `teacher_weights`:
    a `pretrained.pt` path or a state dict, see `LLMCodecSemanticLayer1.load_teacher_weights`); with `groups`, the
    teacher chooses a group of layer-1 words and the latent the word (`LLMCodecConfig.semantic_groups`). Its
    centroids (and groups) still have to be fitted (`fit_semantic_layer1`).
    """
    if codec.semantic is not None:
        raise ValueError(f"The codec already computes layer 1 with {codec.config.semantic_teacher!r}.")
    config = codec.config.__class__.from_dict({**codec.config.to_dict(), "semantic_teacher": teacher,
                                               "semantic_clusters": clusters, "semantic_groups": groups})
    new = LLMCodecModel(config)
    missing, unexpected = new.load_state_dict(codec.state_dict(), strict=False)
    missing = [k for k in missing if not k.startswith("semantic.") and k != "quantizer.layers.0.word_heads"]
    if missing or unexpected:
        raise RuntimeError(f"Could not carry the codec's weights over: missing {missing}, unexpected {unexpected}.")
    new.semantic.load_teacher_weights(teacher_weights)
    return new.to(codec.device, codec.dtype).train(codec.training)


__all__ = [
    "add_semantic_layer1", "choose_layer1_words", "draw_fit_clips", "fit_layer1_groups", "fit_semantic_layer1",
    "group_layer1_words", "groups_headed_by", "spherical_kmeans",
]
