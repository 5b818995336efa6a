"""Few-shot classification episodes (the UniAudio 1.5 protocol) over a labelled clip pool, scored by a frozen LM.

An *episode* draws N classes (N-way), K demonstrations per class (K-shot) and Q queries per class from a pool of
labelled clips; the demonstrations (repeated R times, with or without the instruction line) form the prompt and
every query is classified among the N labels. Accuracy over many episodes, with its Wilson 95 % interval, measures
how well the codec + LM pair learns an audio task in context.

Every clip of the pool is encoded once (its LM ids, and for `method="embedding"` its LM embedding, are cached), so
one episode costs one prompt prefix plus one batch of queries. The scores are those of the public
`AudioFewShotClassificationPipeline.__call__` for the same demonstrations and queries (tested).

The `logmel` method is the reference without learning: nearest class prototype of log-mel statistics
(`reference.logmel_statistics`), no codec and no LM; alone it needs no classifier.

    pool = load_pool("data/tasks/drum_type")                      # or a datasets.Dataset, or root/<label>/*.wav
    results = evaluate_fewshot(classifier, pool, settings=[(2, 1), (3, 3)], methods=("icl", "embedding", "logmel"))
    reference = evaluate_fewshot(None, pool, settings=[(2, 1)], methods="logmel")   # no model at all
    save_results(results, "outputs/fewshot")                      # results.json, results.md, confusion PNGs
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio_io import AUDIO_EXTENSIONS, HFAudioColumn, audio_files_under, read_audio
from ..extras import missing_extra
from ..pipeline_llm_codec import Prompt
from ..processing_llm_codec import resolve_collapse_repeats
from .metrics import load_metric
from .reference import REFERENCE_SAMPLE_RATE, logmel_statistics

logger = logging.getLogger(__name__)

METHODS = ("icl", "calibrated", "embedding", "codes", "logmel")
"""Scoring methods: label log-likelihood after the prompt, the same with contextual calibration, LM embeddings,
prototypes of the clips' layer-1 code histograms (the codec alone, no LM: what the codes the LM reads carry; group
heads for a codec with `semantic_groups`), and the
no-learning reference (prototypes of log-mel statistics, no model)."""

LM_METHODS = ("icl", "calibrated", "embedding")
"""The methods that score with the LM."""

CODEC_METHODS = (*LM_METHODS, "codes")
"""The methods that need a classifier (its codec, and for `LM_METHODS` its LM)."""

EMBEDDING_TEMPERATURE = 0.05  # the pipeline's cosine-similarity temperature for `method="embedding"`


# ---------------------------------------------------------------------------------------------------- the pool


@dataclass
class ClipPool:
    """
    Labelled clips: clip `i` is `sources[i]` (a file path, or encoded bytes from a dataset), labelled `labels[i]`,
    with extra fields `metadata[i]` (e.g. `{"kit": ...}`, usable as an episode's `group_key`).
    """

    sources: Sequence
    labels: list[str]
    metadata: list[dict] = field(default_factory=list)
    name: str = "task"

    def __post_init__(self):
        if len(self.sources) != len(self.labels):
            raise ValueError(f"{len(self.sources)} clips but {len(self.labels)} labels.")
        if not self.metadata:
            self.metadata = [{} for _ in self.labels]
        if len(self.sources) == 0:
            raise ValueError(f"The clip pool {self.name!r} is empty.")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted(set(self.labels))

    def indices_by_label(self) -> dict[str, list[int]]:
        """label -> indices of its clips (pool order), labels sorted."""
        by_label: dict[str, list[int]] = {label: [] for label in self.classes}
        for index, label in enumerate(self.labels):
            by_label[label].append(index)
        return by_label

    def describe(self, index: int) -> str:
        """A short name of clip `index` (its path, or `name[index]` for dataset rows)."""
        source = self.sources[index]
        return str(source) if isinstance(source, (str, Path)) else f"{self.name}[{index}]"

    def group(self, index: int, key: str) -> str:
        """The value of field `key` of clip `index` (as a string); raises a clear error when a clip lacks it."""
        meta = self.metadata[index]
        if key not in meta or meta[key] is None:
            fields = sorted(k for k, v in meta.items() if v is not None)
            raise ValueError(
                f"group_key {key!r}: clip {self.describe(index)} has no such field (fields: {fields}). Group keys come "
                "from manifest.jsonl fields or dataset columns; use one of those, or no group key."
            )
        return str(meta[key])

    def audio(self, index: int, sample_rate: int) -> np.ndarray:
        """Clip `index` decoded to mono float32 at `sample_rate`, shape `(samples,)`."""
        return read_audio(self.sources[index], sample_rate)

    # ----------------------------------------------------------------------------------------------- loaders

    @classmethod
    def from_folder(cls, root: str | Path, name: str | None = None) -> "ClipPool":
        """
        `root/<label>/**/*.wav|flac|ogg` (each first-level subfolder is a class). When `root/manifest.jsonl`
        exists it is read instead (`from_manifest`), so its extra fields can serve as group keys.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"No folder at {root}: give a folder holding one subfolder of clips per label.")
        if (root / "manifest.jsonl").is_file():
            return cls.from_manifest(root / "manifest.jsonl", name=name or root.name)
        sources, labels = [], []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            files = audio_files_under(folder)
            sources += [str(p) for p in files]
            labels += [folder.name] * len(files)
        if not sources:
            raise ValueError(
                f"No labelled clips under {root}: expected {root}/<label>/*{'|'.join(AUDIO_EXTENSIONS)} (one subfolder "
                "per label) or a manifest.jsonl with `path` and `label` fields."
            )
        return cls(sources, labels, name=name or root.name)

    @classmethod
    def from_manifest(cls, path: str | Path, name: str | None = None) -> "ClipPool":
        """
        A JSON-lines manifest, one object per clip with `path` and `label` (other fields are kept as metadata).
        A relative `path` is looked up relative to the manifest's folder, then to its parent and grandparent (the
        bundled `data/tasks/<task>/manifest.jsonl` lists paths relative to `data/`).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No manifest at {path}.")
        bases = [path.parent, path.parent.parent, path.parent.parent.parent]
        sources, labels, metadata = [], [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not a JSON object ({error}).") from None
            missing = [k for k in ("path", "label") if k not in row]
            if missing:
                raise ValueError(f"{path}:{number} lacks {missing}: every row needs `path` and `label`.")
            entry = Path(str(row["path"]))
            candidates = [entry] if entry.is_absolute() else [base / entry for base in bases]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                tried = ", ".join(str(c) for c in candidates)
                raise FileNotFoundError(f"{path}:{number}: audio {row['path']} not found (tried {tried}).")
            sources.append(str(found))
            labels.append(str(row["label"]))
            metadata.append({k: v for k, v in row.items() if k not in ("path", "label")})
        if not sources:
            raise ValueError(f"{path} lists no clips.")
        return cls(sources, labels, metadata, name=name or path.parent.name)

    @classmethod
    def from_dataset(cls, dataset, audio_column: str = "audio", label_column: str = "label", name: str | None = None):
        """
        A `datasets.Dataset` with an audio column (read with `Audio(decode=False)`: bytes or paths decoded by
        soundfile, see `HFAudioColumn`) and a label column (`ClassLabel` ints become their names). The other
        non-audio columns become metadata (group keys).
        """
        if label_column not in dataset.column_names:
            raise ValueError(f"The dataset has no {label_column!r} column (columns: {dataset.column_names}).")
        sources = HFAudioColumn(dataset, audio_column)
        feature = dataset.features[label_column]
        raw = dataset[label_column]
        labels = [feature.int2str(int(v)) if hasattr(feature, "int2str") else str(v) for v in raw]
        others = [c for c in dataset.column_names if c not in (audio_column, label_column)]
        metadata = dataset.select_columns(others).to_list() if others else []
        dataset_name = getattr(getattr(dataset, "info", None), "dataset_name", None)
        return cls(sources, labels, metadata, name=name or dataset_name or "dataset")


def load_pool(data, name: str | None = None, audio_column: str = "audio", label_column: str = "label") -> ClipPool:
    """
    A `ClipPool` from a folder (`root/<label>/*.wav|flac|ogg`, or a folder with `manifest.jsonl`), a `.jsonl`
    manifest, a `datasets.Dataset`, or a `ClipPool` (returned unchanged).
    """
    if isinstance(data, ClipPool):
        return data
    if hasattr(data, "column_names") and hasattr(data, "features"):
        return ClipPool.from_dataset(data, audio_column, label_column, name)
    path = Path(data)
    if path.is_dir():
        return ClipPool.from_folder(path, name)
    if path.is_file():
        if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
            raise ValueError(f"{path} is not a manifest: give a folder root/<label>/clips or a .jsonl manifest.")
        return ClipPool.from_manifest(path, name)
    raise FileNotFoundError(f"No folder or manifest at {path}.")


# ------------------------------------------------------------------------------------------------- episodes


@dataclass
class Episode:
    """
    One N-way K-shot episode: `labels` (the N classes, in the order the instruction lists them), `demos` (pool
    indices of the N*K demonstrations, in prompt order) with `demo_labels`, and `queries` (pool indices of the N*Q
    queries) with `query_labels`.
    """

    labels: list[str]
    demos: list[int]
    demo_labels: list[str]
    queries: list[int]
    query_labels: list[str]


def _split_possible(sizes: list[int], k_shot: int, n_queries: int) -> bool:
    """Whether groups of these sizes can be split in two sides holding >= k_shot and >= n_queries clips."""
    total, sums = sum(sizes), {0}
    for size in sizes:
        sums |= {s + size for s in sums}
    return any(s >= k_shot and total - s >= n_queries for s in sums)


def eligible_classes(pool: ClipPool, k_shot: int, n_queries: int, group_key: str | None = None):
    """
    Classes that can fill an episode: `(eligible: list[str], excluded: dict[label, reason])`. A class needs at
    least `k_shot + n_queries` clips; with `group_key`, its groups must also split into a demonstration side of
    at least `k_shot` clips and a query side of at least `n_queries` (so it needs two groups or more).
    """
    eligible, excluded = [], {}
    for label, indices in pool.indices_by_label().items():
        if len(indices) < k_shot + n_queries:
            excluded[label] = f"{len(indices)} clips, needs {k_shot + n_queries} ({k_shot} shots + {n_queries} queries)"
            continue
        if group_key is not None:
            sizes = list(Counter(pool.group(i, group_key) for i in indices).values())
            if not _split_possible(sizes, k_shot, n_queries):
                excluded[label] = (
                    f"its clips come from {len(sizes)} {group_key} group(s) of sizes {sorted(sizes, reverse=True)[:5]}, "
                    f"which cannot give {k_shot} demonstrations and {n_queries} queries from different {group_key}s"
                )
                continue
        eligible.append(label)
    return eligible, excluded


def check_setting(pool: ClipPool, n_way: int, k_shot: int, n_queries: int = 1, group_key: str | None = None):
    """
    `eligible_classes` for an N-way K-shot setting, raising a `ValueError` that lists every excluded class and why
    when fewer than `n_way` classes are eligible (or the sizes are invalid). Returns `(eligible, excluded)`.
    """
    if n_way < 2 or k_shot < 1 or n_queries < 1:
        raise ValueError(
            f"Need ways >= 2, shots >= 1 and queries per class >= 1; got {n_way}-way {k_shot}-shot, {n_queries} queries."
        )
    eligible, excluded = eligible_classes(pool, k_shot, n_queries, group_key)
    if len(eligible) < n_way:
        reasons = "; ".join(f"{label}: {why}" for label, why in excluded.items())
        raise ValueError(
            f"{pool.name}: only {len(eligible)} class(es) can fill a {n_way}-way {k_shot}-shot episode with "
            f"{n_queries} queries per class ({', '.join(eligible) or 'none'}); excluded: {reasons}. Use fewer ways, "
            "shots or queries, add clips" + (", or drop the group key." if group_key else ".")
        )
    return eligible, excluded


def sample_episodes(
    pool: ClipPool,
    n_way: int,
    k_shot: int,
    n_queries: int = 1,
    n_episodes: int = 20,
    seed: int = 0,
    group_key: str | None = None,
    max_attempts: int = 200,
) -> list[Episode]:
    """
    Draws `n_episodes` N-way K-shot episodes with `n_queries` queries per class (reproducible for a given `seed`).

    In each episode the N classes are drawn without replacement among the eligible ones (see `eligible_classes`;
    the others are left out with a warning), then K demonstrations and Q queries per class, all distinct clips.
    The demonstrations are shuffled into prompt order; the label order of the instruction is the draw order.

    With `group_key` (a metadata field such as "kit" or "speaker") the demonstrations and the queries of an episode
    come from different groups: the groups of the episode's classes are split at random into a demonstration side
    and a query side (up to `max_attempts` tries per episode), so no group (kit, speaker...) feeds both sides.

    Returns:
        `list[Episode]` of length `n_episodes`.

    Raises:
        `ValueError`: fewer than `n_way` eligible classes (the message lists each excluded class and why), bad
        sizes, or an episode whose classes could not be split by group within `max_attempts` (naming them).
    """
    if n_episodes < 1:
        raise ValueError(f"Need at least one episode, got {n_episodes}.")
    eligible, excluded = check_setting(pool, n_way, k_shot, n_queries, group_key)
    if excluded:
        logger.warning(
            "%s, %d-way %d-shot: leaving out %d class(es): %s",
            pool.name, n_way, k_shot, len(excluded), "; ".join(f"{l}: {why}" for l, why in excluded.items()),
        )
    by_label = pool.indices_by_label()
    rng = np.random.default_rng(seed)
    episodes = []
    for number in range(n_episodes):
        labels = [str(l) for l in rng.choice(eligible, size=n_way, replace=False)]
        if group_key is None:
            sides = {label: (by_label[label], by_label[label]) for label in labels}
        else:
            sides = _split_by_group(pool, by_label, labels, k_shot, n_queries, group_key, rng, max_attempts, number)
        demos, demo_labels, queries, query_labels = [], [], [], []
        for label in labels:
            demo_side, query_side = sides[label]
            if group_key is None:
                chosen = rng.permutation(demo_side)[: k_shot + n_queries]
                demo_part, query_part = chosen[:k_shot], chosen[k_shot:]
            else:
                demo_part = rng.permutation(demo_side)[:k_shot]
                query_part = rng.permutation(query_side)[:n_queries]
            demos += [int(i) for i in demo_part]
            demo_labels += [label] * k_shot
            queries += [int(i) for i in query_part]
            query_labels += [label] * n_queries
        order = rng.permutation(len(demos))
        episodes.append(
            Episode(labels, [demos[i] for i in order], [demo_labels[i] for i in order], queries, query_labels)
        )
    return episodes


def _split_by_group(pool, by_label, labels, k_shot, n_queries, group_key, rng, max_attempts, number):
    """label -> (demonstration-side clips, query-side clips) from a random split of the episode's groups."""
    groups_of = {label: [pool.group(i, group_key) for i in by_label[label]] for label in labels}
    groups = sorted({g for values in groups_of.values() for g in values})
    failures = Counter()
    for _ in range(max_attempts):
        order = rng.permutation(len(groups))
        cut = int(rng.integers(1, len(groups))) if len(groups) > 1 else 1
        demo_groups = {groups[i] for i in order[:cut]}
        sides, ok = {}, True
        for label in labels:
            demo_side = [i for i, g in zip(by_label[label], groups_of[label]) if g in demo_groups]
            query_side = [i for i, g in zip(by_label[label], groups_of[label]) if g not in demo_groups]
            if len(demo_side) < k_shot or len(query_side) < n_queries:
                failures[label] += 1
                ok = False
            sides[label] = (demo_side, query_side)
        if ok:
            return sides
    worst = ", ".join(label for label, _ in failures.most_common(3))
    raise ValueError(
        f"{pool.name}, episode {number}: could not split the {group_key} groups of classes {labels} so that "
        f"demonstrations and queries come from different {group_key}s in {max_attempts} tries (hardest: {worst}). "
        "Use fewer ways, shots or queries, or drop the group key."
    )


# -------------------------------------------------------------------------------------------------- scoring


class FewShotEvaluator:
    """
    Scores episodes with an `AudioFewShotClassificationPipeline`, encoding every clip of `pool` once.

    Per clip it caches the prompt ids (`codes_to_ids` of its codes for `layers`, with each run of equal layer-1
    codes written once when `collapse_repeats`: the cache holds the ids the prompt uses), when the embedding method is
    used the LM embedding (`embed_ids`), and for the logmel method the L2-normalised `logmel_statistics` of the clip
    at 16 kHz (whatever the codec's rate, so that the reference does not depend on the model). An episode then costs
    one prefix (`build_prefix` + `score_labels`, whose KV cache serves every query) and, for calibration, one
    content-free query more. `classifier` may be `None` when only "logmel" is scored.
    """

    def __init__(self, classifier, pool: ClipPool, layers=(0,), length_normalize: bool = True, batch_size: int = 8,
                 progress: bool | None = None, collapse_repeats: bool | None = None):
        self.classifier = classifier
        self.pool = pool
        self.layers = tuple(layers)
        config = getattr(getattr(classifier, "model", None), "config", None)
        # fixed for the evaluator's life: `_ids` caches its ids
        self.collapse_repeats = resolve_collapse_repeats(collapse_repeats, config, self.layers)
        self.length_normalize = length_normalize
        self.batch_size = batch_size
        self.progress = progress
        self._ids: dict[int, list[int]] = {}
        self._embeddings: dict[int, torch.Tensor] = {}
        self._logmel: dict[int, torch.Tensor] = {}
        self._code_histograms: dict[int, torch.Tensor] = {}  # L2-normalised counts of each layer-1 code
        self.encode_seconds = 0.0  # time spent encoding clips with the codec so far
        self.embed_seconds = 0.0  # time spent embedding clips with the LM so far (embedding method)
        self.logmel_seconds = 0.0  # time spent reading clips and computing their logmel features so far

    @property
    def sample_rate(self) -> int:
        """The codec's sampling rate, or 16000 without a classifier."""
        return REFERENCE_SAMPLE_RATE if self.classifier is None else self.classifier.model.config.sample_rate

    def prepare(self, indices, embeddings: bool = False, logmel: bool = False, encode: bool = True) -> None:
        """
        Caches what the methods need for the clips `indices`: with `encode`, their prompt ids and the histogram of
        their layer-1 codes (batched through the codec); with `embeddings`, also their LM embeddings (implies
        `encode`); with `logmel`, their logmel feature vectors (no model involved). Clips already cached are skipped.
        """
        if logmel:
            self._prepare_logmel(indices)
        if not (encode or embeddings):
            return
        if self.classifier is None:
            raise ValueError(
                "Encoding clips needs a classifier (an AudioFewShotClassificationPipeline): the methods "
                f"{', '.join(CODEC_METHODS)} score with the codec (and LM). Pass one, or use methods='logmel' alone."
            )
        began = time.perf_counter()
        todo = sorted({int(i) for i in indices} - set(self._ids))
        bar = tqdm(total=len(todo), desc="encoding clips", disable=not todo or self._quiet(len(todo)))
        for start in range(0, len(todo), self.batch_size):
            group = todo[start : start + self.batch_size]
            arrays = [self.pool.audio(i, self.sample_rate) for i in group]
            codes = self.classifier.encode_audio(arrays, self.sample_rate, self.batch_size)
            size = self.classifier.model.config.codebook_sizes[0]
            for index, clip_codes in zip(group, codes):
                self._ids[index] = self.classifier.codec_processor.codes_to_ids(
                    clip_codes, layers=self.layers, collapse_repeats=self.collapse_repeats
                )[0]
                layer1 = self.classifier.codec_processor.read_layer1(clip_codes[0].flatten())  # what the LM reads
                histogram = torch.bincount(layer1, minlength=size).float()
                self._code_histograms[index] = torch.nn.functional.normalize(histogram, dim=-1)
            bar.update(len(group))
        bar.close()
        self.encode_seconds += time.perf_counter() - began
        if embeddings:
            began = time.perf_counter()
            missing = sorted({int(i) for i in indices} - set(self._embeddings))
            if missing:
                vectors = self.classifier.embed_ids([self._ids[i] for i in missing], self.batch_size,
                                                    not self._quiet(len(missing)))
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
                self._embeddings.update(zip(missing, vectors))
            self.embed_seconds += time.perf_counter() - began

    def _prepare_logmel(self, indices) -> None:
        """Caches the L2-normalised logmel vector `(2 * 40,)` of each clip of `indices` not yet cached."""
        began = time.perf_counter()
        todo = sorted({int(i) for i in indices} - set(self._logmel))
        for index in tqdm(todo, desc="logmel features", disable=not todo or self._quiet(len(todo))):
            try:
                vector = logmel_statistics(self.pool.audio(index, REFERENCE_SAMPLE_RATE), REFERENCE_SAMPLE_RATE)
            except ValueError as error:
                raise ValueError(f"{self.pool.describe(index)}: {error}") from None
            self._logmel[index] = torch.nn.functional.normalize(torch.from_numpy(vector), dim=-1)
        self.logmel_seconds += time.perf_counter() - began

    def _quiet(self, total: int) -> bool:
        return not (self.progress if self.progress is not None else total >= 16)

    def clip_ids(self, index: int) -> list[int]:
        """The prompt ids of clip `index` (encoding it first if needed)."""
        self.prepare([index])
        return self._ids[index]

    def episode_scores(self, episode: Episode, methods=("icl",), n_repeats: int = 1, instruction: bool = True):
        """
        Scores of every query of `episode` for each method: `{method: (num_queries, N) float array}`, columns in
        `episode.labels` order. For the LM methods, the same numbers as the pipeline's `__call__` (before its
        softmax) would give for `demonstrations=[(clip, label) of episode.demos]`, `candidate_labels=episode.labels`
        (and `layers` / `collapse_repeats` as the evaluator's);
        for "codes", `prototype_scores` of the clips' layer-1 code histograms (the codec alone); for "logmel", of
        their logmel vectors (no model).
        """
        methods = check_methods(methods)
        check_classifier(self.classifier, methods)
        pipe = self.classifier
        self.prepare(episode.demos + episode.queries, embeddings="embedding" in methods, logmel="logmel" in methods,
                     encode=any(m in CODEC_METHODS for m in methods))
        scores = {}
        if "icl" in methods or "calibrated" in methods:
            demo_ids = [self._ids[i] for i in episode.demos]
            query_ids = [self._ids[i] for i in episode.queries]
            prefix = pipe.build_prefix(demo_ids, episode.demo_labels, episode.labels, n_repeats, instruction)
            icl = pipe.score_labels(prefix, query_ids, episode.labels, self.length_normalize, self.batch_size, False)
            if "icl" in methods:
                scores["icl"] = icl
            if "calibrated" in methods:
                content_free = Prompt().add_text(pipe.tokenizer, "N/A").ids
                baseline = pipe.score_labels(prefix, [content_free], episode.labels, self.length_normalize, 1, False)[0]
                scores["calibrated"] = icl - baseline[None, :]
        if "embedding" in methods:
            scores["embedding"] = prototype_scores(
                torch.stack([self._embeddings[i] for i in episode.demos]), episode.demo_labels,
                torch.stack([self._embeddings[i] for i in episode.queries]), episode.labels,
            )
        for method, table in (("codes", self._code_histograms), ("logmel", self._logmel)):
            if method in methods:
                scores[method] = prototype_scores(
                    torch.stack([table[i] for i in episode.demos]), episode.demo_labels,
                    torch.stack([table[i] for i in episode.queries]), episode.labels,
                )
        return {m: scores[m] for m in methods}


def prototype_scores(demo_embeddings: torch.Tensor, demo_labels, query_embeddings: torch.Tensor, labels) -> np.ndarray:
    """
    The pipeline's `method="embedding"` scores from L2-normalised clip embeddings: each class prototype is the
    normalised mean of its demonstrations; scores are cosine similarities / `EMBEDDING_TEMPERATURE`. The logmel
    method uses the same rule on L2-normalised logmel vectors.
    `demo_embeddings` `(num_demos, hidden)`, `query_embeddings` `(num_queries, hidden)` -> `(num_queries, N)`.
    """
    demo_labels = list(demo_labels)
    prototypes = torch.stack([demo_embeddings[[i for i, l in enumerate(demo_labels) if l == label]].mean(0) for label in labels])
    prototypes = torch.nn.functional.normalize(prototypes, dim=-1)
    return (query_embeddings @ prototypes.t() / EMBEDDING_TEMPERATURE).numpy()


def check_methods(methods) -> tuple[str, ...]:
    """`"icl,embedding"` or a sequence of method names -> a tuple of valid names; a clear error otherwise."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = tuple(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown method(s) {unknown or methods}: choose among {', '.join(METHODS)}.")
    return methods


def check_classifier(classifier, methods) -> None:
    """Raises a clear `ValueError` when `classifier` is `None` but one of `methods` needs the codec (and LM)."""
    needing = [m for m in check_methods(methods) if m in CODEC_METHODS]
    if classifier is None and needing:
        raise ValueError(
            f"Method(s) {', '.join(needing)} need a classifier (an AudioFewShotClassificationPipeline with the codec "
            "and LM); got None. Pass one, or ask for methods='logmel' alone, which needs no model."
        )


# -------------------------------------------------------------------------------------------------- results


@dataclass
class FewShotResult:
    """
    Accuracy of one method in one N-way K-shot setting, over `episodes` episodes (`n` queries scored in all).

    `accuracy` with its Wilson 95 % interval `[ci_low, ci_high]`; `chance` = 1/N; `per_class_accuracy` (label ->
    accuracy of its queries); `confusion[i][j]` counts queries of `confusion_labels[i]` predicted as
    `confusion_labels[j]`; `episode_accuracy` one value per episode; `seconds` the scoring time of this method (calibrated includes the
    label scoring it shares with icl; embedding includes embedding every clip of the run once, logmel reading every
    clip of the run and computing its features once, both shared by the run's settings); `encode_seconds` the time
    spent encoding the run's clips with the codec (shared by every result of the run; 0 when only logmel is
    scored); `excluded_classes` (label -> reason); `collapse_repeats` whether the prompts wrote each run of equal
    layer-1 words once.
    """

    task: str
    n_way: int
    k_shot: int
    method: str
    accuracy: float
    ci_low: float
    ci_high: float
    chance: float
    n: int
    episodes: int
    n_queries: int
    n_repeats: int
    instruction: bool
    seed: int
    group_key: str | None
    per_class_accuracy: dict[str, float]
    confusion_labels: list[str]
    confusion: list[list[int]]
    episode_accuracy: list[float]
    seconds: float
    encode_seconds: float
    excluded_classes: dict[str, str] = field(default_factory=dict)
    confusion_png: str | None = None
    collapse_repeats: bool = False

    @property
    def setting(self) -> str:
        return f"{self.n_way}-way {self.k_shot}-shot"


def parse_settings(text: str) -> list[tuple[int, int]]:
    """`"2x1,3x3"` -> `[(2, 1), (3, 3)]` (N-way x K-shot)."""
    settings = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", item)
        if not match:
            raise ValueError(f"Bad setting {item!r}: write N-way x K-shot pairs like 2x1,3x3,5x5.")
        settings.append((int(match.group(1)), int(match.group(2))))
    return settings


def evaluate_fewshot(
    classifier,
    data,
    settings: Sequence[tuple[int, int]] = ((2, 1),),
    methods=("icl", "calibrated", "embedding", "codes", "logmel"),
    n_queries: int = 2,
    n_episodes: int = 20,
    n_repeats: int = 1,
    instruction: bool = True,
    group_key: str | None = None,
    seed: int = 0,
    task: str | None = None,
    layers=(0,),
    batch_size: int = 8,
    progress: bool | None = True,
    collapse_repeats: bool | None = None,
) -> list[FewShotResult]:
    """
    Few-shot classification accuracy of a codec + LM pair on a labelled clip pool.

    Args:
        classifier: an `AudioFewShotClassificationPipeline` (`pipeline("audio-few-shot-classification", ...)`), or
            `None` when `methods` is "logmel" alone (then no clip is encoded and no model is needed).
        data: what `load_pool` accepts (folder, manifest, `datasets.Dataset`, `ClipPool`).
        settings: (N-way, K-shot) pairs; every clip is encoded once for all of them.
        methods: any of "icl", "calibrated", "embedding", "codes", "logmel" (or a comma-separated string); "codes"
            is the nearest prototype of the clips' layer-1 code histograms (the codec alone, no LM: what the codes
            carry; of the group heads the LM reads for a codec with `semantic_groups`), "logmel" the no-learning
            reference (nearest prototype of log-mel statistics, see
            `reference.logmel_statistics`).
        n_queries: queries per class and episode. n_episodes: episodes per setting (same `seed` for each setting).
        n_repeats, instruction: prompt options (see the pipeline). group_key: see `sample_episodes`.
        task: name in the results (default: the pool's name). layers: codec layers in the prompt (default layer 1).
        progress: a tqdm bar over the episodes of each setting.
        collapse_repeats: write each run of consecutive equal layer-1 words once in the prompts (demonstrations and
            queries, and what the embedding method embeds; needs `layers=(0,)`; see the pipeline). `None`
            (default): `True` for a codec whose layer 1 is teacher-computed, else `False`. Recorded in each result
            and in `results.md`. The "codes" method keeps the histograms of all codes.

    Returns:
        `list[FewShotResult]`, one per (setting, method), in that order.

    Raises:
        `ValueError`: an unknown method, a codec or LM method with `classifier=None`, or an impossible setting.
    """
    methods = check_methods(methods)
    check_classifier(classifier, methods)
    pool = load_pool(data)
    task = task or pool.name
    # sample everything first: an impossible setting fails before any encoding
    plans = []
    for n_way, k_shot in settings:
        episodes = sample_episodes(pool, n_way, k_shot, n_queries, n_episodes, seed, group_key)
        plans.append((n_way, k_shot, episodes, eligible_classes(pool, k_shot, n_queries, group_key)[1]))
    evaluator = FewShotEvaluator(classifier, pool, layers, batch_size=batch_size, progress=progress,
                                 collapse_repeats=collapse_repeats)
    needed = sorted({i for *_, episodes, _ in plans for e in episodes for i in e.demos + e.queries})
    evaluator.prepare(needed, embeddings="embedding" in methods, logmel="logmel" in methods,
                      encode=any(m in CODEC_METHODS for m in methods))
    encode_seconds = evaluator.encode_seconds
    # clip embeddings and logmel features serve every setting
    seconds_shared = {"embedding": evaluator.embed_seconds, "logmel": evaluator.logmel_seconds}
    accuracy = load_metric("accuracy", keep_in_memory=True)

    results = []
    for n_way, k_shot, episodes, excluded in plans:
        predictions = {m: [] for m in methods}
        references, per_episode = [], {m: [] for m in methods}
        seconds = {m: seconds_shared.get(m, 0.0) for m in methods}
        bar = tqdm(episodes, desc=f"{task} {n_way}-way {k_shot}-shot", disable=not progress)
        for episode in bar:
            references += episode.query_labels
            for group in _timing_groups(methods):
                began = time.perf_counter()
                scores = evaluator.episode_scores(episode, group, n_repeats, instruction)
                elapsed = time.perf_counter() - began
                for method, values in scores.items():
                    seconds[method] += elapsed
                    predicted = [episode.labels[j] for j in np.asarray(values).argmax(1)]
                    predictions[method] += predicted
                    per_episode[method].append(float(np.mean([p == r for p, r in zip(predicted, episode.query_labels)])))
        labels = sorted({l for e in episodes for l in e.labels})
        for method in methods:
            metric = accuracy.compute(predictions=predictions[method], references=references)
            results.append(
                FewShotResult(
                    task=task, n_way=n_way, k_shot=k_shot, method=method,
                    accuracy=metric["accuracy"], ci_low=metric["ci_low"], ci_high=metric["ci_high"],
                    chance=1.0 / n_way, n=metric["n"], episodes=len(episodes), n_queries=n_queries,
                    n_repeats=n_repeats, instruction=instruction, seed=seed, group_key=group_key,
                    per_class_accuracy=_per_class(predictions[method], references, labels),
                    confusion_labels=labels, confusion=_confusion(predictions[method], references, labels),
                    episode_accuracy=per_episode[method], seconds=seconds[method], encode_seconds=encode_seconds,
                    excluded_classes=dict(excluded), collapse_repeats=evaluator.collapse_repeats,
                )
            )
    return results


def _timing_groups(methods):
    """Methods scored together: icl and calibrated share one prefix and its label scores; the others alone."""
    label_methods = tuple(m for m in methods if m in ("icl", "calibrated"))
    return [g for g in (label_methods, *((m,) for m in ("embedding", "codes", "logmel") if m in methods)) if g]


def _per_class(predictions, references, labels) -> dict[str, float]:
    result = {}
    for label in labels:
        hits = [p == r for p, r in zip(predictions, references) if r == label]
        if hits:
            result[label] = float(np.mean(hits))
    return result


def _confusion(predictions, references, labels) -> list[list[int]]:
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, ([index[r] for r in references], [index[p] for p in predictions]), 1)
    return matrix.tolist()


def plot_confusion(result: FewShotResult, path: str | Path) -> Path:
    """Writes the confusion matrix of `result` (counts; rows true, columns predicted) as a PNG; returns the path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: optional (the "plots" extra)
        from matplotlib.figure import Figure  # no pyplot: no global state, safe in threads and headless
    except ImportError as error:
        raise missing_extra(error, "matplotlib", "plots", "Plotting the confusion matrix") from None

    matrix = np.asarray(result.confusion)
    size = len(result.confusion_labels)
    fig = Figure(figsize=(2.5 + 0.55 * size, 2.0 + 0.5 * size))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="magma", vmin=0)
    ax.set_xticks(range(size), result.confusion_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(size), result.confusion_labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    if size <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="black" if count > 0.6 * top else "white")
    ax.set_title(
        f"{result.task}, {result.setting}, {result.method}: {result.accuracy:.2f} "
        f"[{result.ci_low:.2f}, {result.ci_high:.2f}]", loc="left", fontsize=9,
    )
    fig.colorbar(image, ax=ax, label="queries", shrink=0.8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def results_table(results: Sequence[FewShotResult]) -> str:
    """A Markdown table: task, N-way, K-shot, method, accuracy, 95 % CI, chance, queries scored, seconds."""
    lines = [
        "| task | N-way | K-shot | method | accuracy | 95 % CI | chance | queries | seconds |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.task} | {r.n_way} | {r.k_shot} | {r.method} | {r.accuracy:.3f} | [{r.ci_low:.3f}, {r.ci_high:.3f}] "
            f"| {r.chance:.3f} | {r.n} | {r.seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def save_results(results: Sequence[FewShotResult], out_dir: str | Path) -> dict[str, Path]:
    """
    Writes `results.json` (every field of every result), `results.md` (the table of `results_table` plus the run's
    options) and one confusion-matrix PNG per result into `out_dir`; sets each result's `confusion_png` (file name,
    relative to `out_dir`). Returns `{"json": path, "markdown": path}`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"confusion_{r.task}_{r.n_way}way{r.k_shot}shot_{r.method}")
        r.confusion_png = plot_confusion(r, out / f"{stem}.png").name
    json_path = out / "results.json"
    json_path.write_text(json.dumps({"results": [asdict(r) for r in results]}, indent=1, ensure_ascii=False))
    notes = []
    for r in results:
        note = (f"- {r.task}: {r.episodes} episodes per setting, {r.n_queries} queries per class, {r.n_repeats} "
                f"repeat(s), instruction {'on' if r.instruction else 'off'}, seed {r.seed}, group key "
                f"{r.group_key or 'none'}")
        if r.collapse_repeats:
            note += ", repeated layer-1 words collapsed in the prompts"
        if r.excluded_classes:
            note += f"; left out: {', '.join(sorted(r.excluded_classes))}"
        if note not in notes:
            notes.append(note)
    pictures = [f"- [{r.task} {r.setting} {r.method}]({r.confusion_png})" for r in results]
    markdown = (
        "# Few-shot classification\n\n" + results_table(results) + "\n" + "\n".join(notes)
        + "\n\nConfusion matrices (rows true, columns predicted):\n\n" + "\n".join(pictures) + "\n"
    )
    md_path = out / "results.md"
    md_path.write_text(markdown)
    return {"json": json_path, "markdown": md_path}


__all__ = [
    "METHODS",
    "ClipPool",
    "Episode",
    "FewShotEvaluator",
    "FewShotResult",
    "check_classifier",
    "check_methods",
    "check_setting",
    "eligible_classes",
    "evaluate_fewshot",
    "load_pool",
    "parse_settings",
    "plot_confusion",
    "prototype_scores",
    "results_table",
    "sample_episodes",
    "save_results",
]
