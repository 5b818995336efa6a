"""Few-shot evaluation harness (llm_codec/evaluation/fewshot.py) and its CLI, on tiny local models and tone clips."""

import json
import logging
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import LlamaConfig, LlamaForCausalLM, pipeline

from llm_codec import LLMCodecModel
from llm_codec.cli import main as cli_main
from llm_codec.evaluation.fewshot import (
    ClipPool,
    FewShotEvaluator,
    check_methods,
    evaluate_fewshot,
    load_pool,
    parse_settings,
    sample_episodes,
    save_results,
)
from llm_codec.evaluation.metrics import METRICS_DIR, load_metric
from llm_codec.evaluation.reference import logmel_statistics

from .conftest import TINY_ARCH, foreign_llama, foreign_tokenizer, tiny_tokenizer

VOCAB = 200
WORDS = [f"w{i}" for i in range(4, 44)]
TONES = {"w50": 220.0, "w60": 880.0, "w70": 2500.0}  # label -> frequency (labels are tokens of the tiny tokenizer)
RATE = 16000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    lm = LlamaForCausalLM(config).eval()
    tokenizer = tiny_tokenizer(VOCAB)
    torch.manual_seed(1)
    codec = LLMCodecModel.from_language_model(lm, tokenizer, word_list=WORDS, **TINY_ARCH).eval()
    return codec, lm, tokenizer


@pytest.fixture(scope="module")
def classifier(models):
    codec, lm, tokenizer = models
    return pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu")


@pytest.fixture(scope="module")
def saved_models(models, tmp_path_factory):
    codec, lm, tokenizer = models
    root = tmp_path_factory.mktemp("models")
    codec.save_pretrained(root / "codec")
    lm.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    return root / "codec", root / "lm"


def tone(freq, index, samples=960):
    rng = np.random.default_rng(index)
    t = np.arange(samples) / RATE
    return (0.4 * np.sin(2 * np.pi * freq * (1 + 0.02 * index) * t) + 0.02 * rng.standard_normal(samples)).astype(np.float32)


@pytest.fixture(scope="module")
def tone_data(tmp_path_factory):
    """data/tasks/tones/<label>/*.wav with data/tasks/tones/manifest.jsonl (paths relative to data/, like the
    bundled tasks; a `kit` field), plus a plain labelled folder and a flat query folder."""
    root = tmp_path_factory.mktemp("data")
    task = root / "tasks" / "tones"
    rows = []
    for label, freq in TONES.items():
        (task / label).mkdir(parents=True)
        for i in range(4):
            name = f"{label}_{i}.wav"
            sf.write(task / label / name, tone(freq, i), RATE)
            rows.append({"path": f"tasks/tones/{label}/{name}", "label": label, "kit": f"kit{i % 2}"})
    (task / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    plain = root / "plain"
    for label, freq in TONES.items():
        (plain / label).mkdir(parents=True)
        for i in range(2):
            sf.write(plain / label / f"{i}.wav", tone(freq, 10 + i), RATE)
    queries = root / "queries"
    for label, freq in list(TONES.items())[:2]:
        (queries / label).mkdir(parents=True)
        sf.write(queries / label / "q.wav", tone(freq, 20), RATE)
    return {"task": task, "plain": plain, "queries": queries}


def fake_pool(counts, kits=None):
    """A pool of placeholder sources: `counts` label -> number of clips; `kits` label -> list of kit per clip."""
    sources, labels, metadata = [], [], []
    for label, count in counts.items():
        for i in range(count):
            sources.append(f"{label}/{i}.wav")
            labels.append(label)
            metadata.append({"kit": kits[label][i]} if kits else {})
    return ClipPool(sources, labels, metadata, name="fake")


# ---------------------------------------------------------------------------------------------- episodes


def test_episode_structure():
    pool = fake_pool({"a": 6, "b": 6, "c": 6, "d": 6})
    episodes = sample_episodes(pool, n_way=3, k_shot=2, n_queries=2, n_episodes=30, seed=0)
    assert len(episodes) == 30
    seen = set()
    for e in episodes:
        assert len(e.labels) == 3 and len(set(e.labels)) == 3
        assert len(e.demos) == 6 and len(e.queries) == 6
        assert sorted(e.demo_labels) == sorted(e.labels * 2) and sorted(e.query_labels) == sorted(e.labels * 2)
        assert [pool.labels[i] for i in e.demos] == e.demo_labels
        assert [pool.labels[i] for i in e.queries] == e.query_labels
        assert not set(e.demos) & set(e.queries)
        assert len(set(e.demos + e.queries)) == 12
        seen.add(tuple(sorted(e.labels)))
    assert len(seen) == 4  # every 3-of-4 class combination occurs over 30 episodes


def test_episode_sampling_is_reproducible():
    pool = fake_pool({"a": 6, "b": 6, "c": 6})
    first = sample_episodes(pool, 2, 1, 2, 10, seed=3)
    assert first == sample_episodes(pool, 2, 1, 2, 10, seed=3)
    assert first != sample_episodes(pool, 2, 1, 2, 10, seed=4)


def test_group_key_keeps_demonstrations_and_queries_apart():
    kits = {label: ["x", "x", "y", "y", "z", "z", "w", "w"] for label in "abc"}
    pool = fake_pool({label: 8 for label in "abc"}, kits)
    grouped = sample_episodes(pool, 3, 2, 1, 40, seed=0, group_key="kit")
    for e in grouped:
        demo_kits = {pool.group(i, "kit") for i in e.demos}
        query_kits = {pool.group(i, "kit") for i in e.queries}
        assert not demo_kits & query_kits
        assert len(e.demos) == 6 and len(e.queries) == 3
    # without the group key the same pool shares kits between the two sides (so the check above means something)
    plain = sample_episodes(pool, 3, 2, 1, 40, seed=0)
    assert any({pool.group(i, "kit") for i in e.demos} & {pool.group(i, "kit") for i in e.queries} for e in plain)


def test_insufficient_data_is_excluded_or_refused(caplog):
    pool = fake_pool({"a": 4, "b": 4, "small": 2})
    with caplog.at_level(logging.WARNING):
        episodes = sample_episodes(pool, 2, 2, 1, 20, seed=0)
    assert "small" in caplog.text
    assert all("small" not in e.labels for e in episodes)
    with pytest.raises(ValueError, match=r"small: 2 clips, needs 3"):
        sample_episodes(pool, 3, 2, 1, 5)
    single_kit = {"a": ["x", "y", "x", "y"], "b": ["x", "y", "x", "y"], "solo": ["x", "x", "x", "x"]}
    pool = fake_pool({"a": 4, "b": 4, "solo": 4}, single_kit)
    with pytest.raises(ValueError, match=r"solo: .*1 kit group"):
        sample_episodes(pool, 3, 1, 1, 5, group_key="kit")
    with pytest.raises(ValueError, match="no such field"):
        sample_episodes(fake_pool({"a": 4, "b": 4}), 2, 1, 1, 5, group_key="speaker")
    with pytest.raises(ValueError, match="ways >= 2"):
        sample_episodes(pool, 1, 1, 1, 5)
    with pytest.raises(ValueError, match="at least one episode"):
        sample_episodes(pool, 2, 1, 1, 0)


def test_methods_and_settings_are_checked():
    assert check_methods("icl, embedding") == ("icl", "embedding")
    assert check_methods("logmel") == ("logmel",)
    assert check_methods("icl,calibrated,embedding,logmel") == ("icl", "calibrated", "embedding", "logmel")
    assert check_methods("codes") == ("codes",)
    with pytest.raises(ValueError, match="choose among icl, calibrated, embedding, codes, logmel"):
        check_methods("icl,knn")
    assert parse_settings("2x1, 3X3") == [(2, 1), (3, 3)]
    with pytest.raises(ValueError, match="2x1"):
        parse_settings("2-1")


def test_pools_from_manifest_folder_and_dataset(tone_data):
    pool = load_pool(tone_data["task"])  # manifest paths are relative to data/, two levels up
    assert pool.name == "tones" and len(pool) == 12 and pool.classes == sorted(TONES)
    assert pool.group(0, "kit") == "kit0" and pool.audio(0, RATE).shape == (960,)
    plain = load_pool(tone_data["plain"])
    assert len(plain) == 6 and plain.classes == sorted(TONES)
    bad = tone_data["task"].parent / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "manifest.jsonl").write_text(json.dumps({"path": "nowhere.wav", "label": "w50"}) + "\n")
    with pytest.raises(FileNotFoundError, match="nowhere.wav not found"):
        load_pool(bad)
    with pytest.raises(FileNotFoundError):
        load_pool(tone_data["task"] / "missing")

    from datasets import Audio, ClassLabel, Dataset

    audio = [{"bytes": open(p, "rb").read(), "path": None} if i % 2 else {"bytes": None, "path": p}
             for i, p in enumerate(plain.sources)]  # encoded bytes and paths
    names = sorted(TONES)
    dataset = Dataset.from_dict(
        {"audio": audio, "label": [names.index(l) for l in plain.labels], "speaker": ["s"] * len(audio)}
    ).cast_column("audio", Audio(decode=False)).cast_column("label", ClassLabel(names=names))
    from_dataset = load_pool(dataset)
    assert from_dataset.labels == plain.labels and from_dataset.group(0, "speaker") == "s"
    np.testing.assert_array_equal(from_dataset.audio(3, RATE), plain.audio(3, RATE))


# ------------------------------------------------------------------------------------------------ scores


def test_harness_scores_equal_the_public_pipeline(classifier, tone_data):
    pool = load_pool(tone_data["task"])
    evaluator = FewShotEvaluator(classifier, pool, progress=False)
    episodes = sample_episodes(pool, 3, 2, 1, 2, seed=1)
    for episode, (n_repeats, instruction) in zip(episodes, [(2, True), (1, False)]):
        scores = evaluator.episode_scores(episode, ("icl", "calibrated", "embedding"), n_repeats, instruction)
        demonstrations = [(pool.audio(i, RATE), label) for i, label in zip(episode.demos, episode.demo_labels)]
        queries = [pool.audio(i, RATE) for i in episode.queries]
        for method, kwargs in (("icl", {}), ("calibrated", {"calibrate": True}), ("embedding", {"method": "embedding"})):
            public = classifier(queries, demonstrations=demonstrations, candidate_labels=episode.labels,
                                sampling_rate=RATE, n_repeats=n_repeats, instruction=instruction, **kwargs)
            assert scores[method].shape == (3, 3)
            ours = torch.softmax(torch.as_tensor(scores[method], dtype=torch.float64), dim=1).numpy()
            for row, ranking in zip(ours, public):
                expected = {r["label"]: r["score"] for r in ranking}
                np.testing.assert_allclose(row, [expected[l] for l in episode.labels], atol=1e-5)
    # the pool is encoded once: every clip of the episodes is cached
    assert set(evaluator._ids) == {i for e in episodes for i in e.demos + e.queries}


def test_collapse_repeats_in_the_harness_cache_scores_and_results(classifier, tone_data, tmp_path):
    pool = load_pool(tone_data["task"])
    evaluator = FewShotEvaluator(classifier, pool, progress=False, collapse_repeats=True)
    plain = FewShotEvaluator(classifier, pool, progress=False)
    episode = sample_episodes(pool, 3, 2, 1, 1, seed=1)[0]
    scores = evaluator.episode_scores(episode, ("icl", "embedding"), 2, True)
    processor = classifier.codec_processor
    shorter = 0
    for i in episode.demos + episode.queries:  # the cache holds the collapsed ids
        codes = classifier.encode_audio([pool.audio(i, RATE)], RATE)[0]
        assert evaluator.clip_ids(i) == processor.codes_to_ids(codes, collapse_repeats=True)[0]
        shorter += len(evaluator.clip_ids(i)) < len(plain.clip_ids(i))
    assert shorter  # some tone clips repeat layer-1 codes
    demonstrations = [(pool.audio(i, RATE), label) for i, label in zip(episode.demos, episode.demo_labels)]
    queries = [pool.audio(i, RATE) for i in episode.queries]
    for method in ("icl", "embedding"):
        public = classifier(queries, demonstrations=demonstrations, candidate_labels=episode.labels,
                            sampling_rate=RATE, n_repeats=2, method=method, collapse_repeats=True)
        ours = torch.softmax(torch.as_tensor(scores[method], dtype=torch.float64), dim=1).numpy()
        for row, ranking in zip(ours, public):
            expected = {r["label"]: r["score"] for r in ranking}
            np.testing.assert_allclose(row, [expected[l] for l in episode.labels], atol=1e-5)
    with pytest.raises(ValueError, match="collapse_repeats=True needs layers=\\(0,\\)"):
        FewShotEvaluator(classifier, pool, layers=(0, 1), collapse_repeats=True)
    results = evaluate_fewshot(classifier, pool, settings=[(2, 1)], methods="icl", n_queries=1, n_episodes=2,
                               progress=False, collapse_repeats=True)
    assert all(r.collapse_repeats for r in results)
    default = evaluate_fewshot(classifier, pool, settings=[(2, 1)], methods="icl", n_queries=1, n_episodes=2,
                               progress=False)
    assert not any(r.collapse_repeats for r in default)
    paths = save_results(results, tmp_path / "collapsed")
    assert json.loads(paths["json"].read_text())["results"][0]["collapse_repeats"] is True
    assert "repeated layer-1 words collapsed" in paths["markdown"].read_text()
    assert "collapsed" not in save_results(default, tmp_path / "default")["markdown"].read_text()


def test_accuracy_metric_module(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    assert (METRICS_DIR / "accuracy" / "accuracy.py").is_file()
    metric = load_metric("accuracy", keep_in_memory=True)
    result = metric.compute(predictions=[1, 0, 1, 1, 2, 2, 0, 1], references=[1, 1, 1, 1, 2, 0, 0, 1])
    assert result["accuracy"] == 0.75 and result["n"] == 8 and result["correct"] == 6
    # Wilson score interval written out: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z, p, n = 1.959963984540054, 0.75, 8
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert result["ci_low"] == pytest.approx((centre - half) / (1 + z * z / n), abs=1e-9)
    assert result["ci_high"] == pytest.approx((centre + half) / (1 + z * z / n), abs=1e-9)
    strings = metric.compute(predictions=["a", "b", "a"], references=["a", "a", "a"])
    assert strings["accuracy"] == pytest.approx(2 / 3) and 0 < strings["ci_low"] < 2 / 3 < strings["ci_high"] < 1
    perfect = metric.compute(predictions=[1] * 5, references=[1] * 5)
    assert perfect["ci_high"] == pytest.approx(1.0) and perfect["ci_low"] < 1.0
    # the same interval from counts (benchmarks and probes that count successes rather than predictions)
    from llm_codec.evaluation.statistics import wilson_interval

    assert wilson_interval(6, 8) == pytest.approx((result["ci_low"], result["ci_high"]), abs=1e-12)
    assert wilson_interval(5, 5) == pytest.approx((perfect["ci_low"], perfect["ci_high"]), abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson_interval(9, 8)


def test_evaluate_fewshot_results_and_files(classifier, tone_data, tmp_path):
    results = evaluate_fewshot(classifier, tone_data["task"], settings=[(2, 1), (3, 2)], methods="icl,embedding",
                               n_queries=2, n_episodes=3, seed=0, progress=False)
    assert [(r.n_way, r.k_shot, r.method) for r in results] == [(2, 1, "icl"), (2, 1, "embedding"),
                                                                 (3, 2, "icl"), (3, 2, "embedding")]
    for r in results:
        confusion = np.array(r.confusion)
        assert r.n == r.n_way * 2 * 3 == confusion.sum() and r.episodes == 3
        assert r.accuracy == pytest.approx(np.trace(confusion) / r.n)
        assert r.ci_low <= r.accuracy <= r.ci_high and r.chance == pytest.approx(1 / r.n_way)
        assert r.accuracy == pytest.approx(np.mean(r.episode_accuracy))
        for label, value in r.per_class_accuracy.items():
            row = confusion[r.confusion_labels.index(label)]
            assert value == pytest.approx(row[r.confusion_labels.index(label)] / row.sum())
        assert r.task == "tones" and r.seconds > 0
    paths = save_results(results, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert len(data["results"]) == 4 and data["results"][0]["confusion"] == results[0].confusion
    markdown = paths["markdown"].read_text()
    assert "| task | N-way | K-shot | method | accuracy | 95 % CI | chance |" in markdown
    assert f"| tones | 3 | 2 | embedding | {results[3].accuracy:.3f} |" in markdown
    for r in results:
        png = (tmp_path / "out" / r.confusion_png).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len({r.confusion_png for r in results}) == 4


# -------------------------------------------------------------------------------------- logmel reference


def test_logmel_statistics_shape_and_errors():
    features = logmel_statistics(tone(220.0, 0, 32000))
    assert features.shape == (80,) and features.dtype == np.float32 and np.isfinite(features).all()
    assert features[40:].max() > 0  # a 2 s clip has many frames: the standard deviations are not all zero
    assert logmel_statistics(tone(880.0, 0), n_mels=20).shape == (40,)
    short = logmel_statistics(np.full(100, 0.1, dtype=np.float32))  # shorter than one window: one padded frame
    assert short.shape == (80,) and np.all(short[40:] == 0)
    with pytest.raises(ValueError, match="empty"):
        logmel_statistics(np.zeros(0, dtype=np.float32))
    broken = tone(220.0, 0)
    broken[10] = np.nan
    with pytest.raises(ValueError, match="1 non-finite sample"):
        logmel_statistics(broken)
    with pytest.raises(ValueError, match=r"mono audio of shape \(samples,\)"):
        logmel_statistics(np.zeros((2, 960), dtype=np.float32))
    # the band means follow the tone: the strongest band rises with the frequency
    peaks = [int(np.argmax(logmel_statistics(tone(f, 0, 8000))[:40])) for f in (220.0, 880.0, 2500.0)]
    assert peaks[0] < peaks[1] < peaks[2]


def test_logmel_separates_tones_without_models(tmp_path):
    """Noisy 220 / 880 / 2500 Hz tones at several levels: the logmel prototypes classify every query of every
    episode (uninformative features, all zeros for instance, would score chance)."""
    for label, freq in TONES.items():
        (tmp_path / label).mkdir()
        for i in range(4):
            sf.write(tmp_path / label / f"{i}.wav", tone(freq, i, 4000) * (0.5 + 0.4 * i), RATE)
    results = evaluate_fewshot(None, tmp_path, settings=[(3, 1), (2, 1)], methods="logmel", n_queries=2,
                               n_episodes=5, seed=0, progress=False)
    assert [(r.n_way, r.method) for r in results] == [(3, "logmel"), (2, "logmel")]
    for r in results:
        assert r.accuracy == 1.0 and r.n == r.n_way * 2 * 5 and r.encode_seconds == 0.0 and r.seconds > 0


def test_codes_method_is_the_prototype_of_layer1_code_histograms(classifier, tone_data):
    """method "codes": each clip is the normalised histogram of its layer-1 codes; prototypes, no LM call."""
    pool = load_pool(tone_data["task"])
    evaluator = FewShotEvaluator(classifier, pool, progress=False)
    episode = sample_episodes(pool, 3, 1, 1, 1, seed=0)[0]
    calls = []
    original = classifier.language_model.forward
    classifier.language_model.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        scores = evaluator.episode_scores(episode, ("codes",))["codes"]
    finally:
        classifier.language_model.forward = original
    assert not calls  # the LM is not used
    size = classifier.model.config.codebook_sizes[0]
    vectors = {}
    for i in episode.demos + episode.queries:
        codes = classifier.encode_audio([pool.audio(i, 16000)], 16000)[0][0]
        vectors[i] = torch.nn.functional.normalize(torch.bincount(codes.flatten(), minlength=size).float(), dim=0)
        assert torch.allclose(evaluator._code_histograms[i], vectors[i])
    prototypes = torch.stack([vectors[i] for i in episode.demos])  # 1 shot: the demonstration is the prototype
    order = [episode.demo_labels.index(label) for label in episode.labels]
    expected = torch.stack([vectors[i] for i in episode.queries]) @ prototypes[order].T
    np.testing.assert_allclose(scores * 0.05, expected.numpy(), atol=1e-6)
    results = evaluate_fewshot(classifier, pool, settings=[(2, 1)], methods="codes,logmel", n_queries=1,
                               n_episodes=2, progress=False)
    assert [r.method for r in results] == ["codes", "logmel"]


def test_logmel_without_classifier_and_without_encoding(classifier, tone_data):
    pool = load_pool(tone_data["task"])
    alone = evaluate_fewshot(None, pool, settings=[(2, 1), (3, 1)], methods="logmel", n_queries=1, n_episodes=3,
                             group_key="kit", progress=False)
    assert [(r.n_way, r.method, r.task) for r in alone] == [(2, "logmel", "tones"), (3, "logmel", "tones")]
    assert all(r.n == r.n_way * 3 and r.encode_seconds == 0.0 for r in alone)
    # with a classifier the logmel rows are the same (features at 16 kHz, independent of the model)
    mixed = evaluate_fewshot(classifier, pool, settings=[(2, 1), (3, 1)], methods="icl,logmel", n_queries=1,
                             n_episodes=3, group_key="kit", progress=False)
    logmel_rows = [r for r in mixed if r.method == "logmel"]
    assert [r.confusion for r in logmel_rows] == [r.confusion for r in alone]
    assert [r.episode_accuracy for r in logmel_rows] == [r.episode_accuracy for r in alone]
    # logmel alone never encodes a clip, even with a classifier
    evaluator = FewShotEvaluator(classifier, pool, progress=False)
    episode = sample_episodes(pool, 3, 1, 1, 1, seed=0)[0]
    scores = evaluator.episode_scores(episode, ("logmel",))
    assert scores["logmel"].shape == (3, 3) and not evaluator._ids and evaluator.encode_seconds == 0.0
    # an LM method needs a classifier
    for methods in ("icl", "calibrated,logmel", "embedding", "codes"):
        with pytest.raises(ValueError, match="need a classifier"):
            evaluate_fewshot(None, pool, methods=methods, n_episodes=1, progress=False)
    with pytest.raises(ValueError, match="need a classifier"):
        FewShotEvaluator(None, pool).episode_scores(episode, ("logmel", "embedding"))


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_classify(saved_models, tone_data, tmp_path, capsys):
    codec, lm = saved_models
    out = tmp_path / "classify.json"
    code = cli_main(["classify", "--demos", str(tone_data["plain"]), "--queries", str(tone_data["queries"]),
                     "--shots", "1", "--model", str(codec), "--lm", str(lm), "--output", str(out), "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "demonstrations (3, 3 labels)" in printed and "accuracy:" in printed
    report = json.loads(out.read_text())
    assert len(report["demonstrations"]) == 3 and len(report["queries"]) == 2
    for query in report["queries"]:
        assert {r["label"] for r in query["ranking"]} == set(TONES)
        assert query["path"] in printed and query["label"] in ("w50", "w60")
    hits = sum(q["ranking"][0]["label"] == q["label"] for q in report["queries"])
    assert report["accuracy"] == hits / 2
    code = cli_main(["classify", "--demos", str(tone_data["plain"]), "--queries",
                     str(tone_data["queries"] / "w50" / "q.wav"), "--method", "embedding", "--top-k", "1",
                     "--model", str(codec), "--lm", str(lm), "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    ranking = printed.strip().splitlines()[-1].rsplit(": ", 1)[1]
    assert "accuracy" not in printed and sum(label in ranking for label in TONES) == 1


def test_cli_evaluate_fewshot(saved_models, tone_data, tmp_path, capsys):
    codec, lm = saved_models
    out = tmp_path / "fewshot"
    code = cli_main(["evaluate", "fewshot", "--data", str(tone_data["task"] / "manifest.jsonl"), "--settings", "2x1,3x1",
                     "--episodes", "2", "--queries-per-class", "1", "--methods", "calibrated,embedding",
                     "--group-key", "kit", "--output", str(out), "--model", str(codec), "--lm", str(lm),
                     "--device", "cpu", "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert [(r["n_way"], r["method"]) for r in results] == [(2, "calibrated"), (2, "embedding"),
                                                            (3, "calibrated"), (3, "embedding")]
    assert all(r["group_key"] == "kit" and r["n"] == r["n_way"] * 2 for r in results)
    assert (out / "results.md").is_file() and "| tones | 3 | 1 | embedding |" in capsys.readouterr().out


def test_cli_collapse_repeats_reaches_the_prompts_and_the_results(saved_models, tone_data, tmp_path, capsys,
                                                                  monkeypatch):
    from llm_codec.evaluation import fewshot_cli
    from llm_codec.pipeline_llm_codec import AudioFewShotClassificationPipeline

    codec, lm = saved_models
    seen = {"evaluate": [], "context": []}
    evaluate = fewshot_cli.evaluate_fewshot
    monkeypatch.setattr(fewshot_cli, "evaluate_fewshot",
                        lambda *a, **k: seen["evaluate"].append(k["collapse_repeats"]) or evaluate(*a, **k))
    build = AudioFewShotClassificationPipeline.build_context
    monkeypatch.setattr(AudioFewShotClassificationPipeline, "build_context",
                        lambda self, *a, **k: seen["context"].append(k["collapse_repeats"]) or build(self, *a, **k))
    models = ["--model", str(codec), "--lm", str(lm), "--device", "cpu"]
    for flag, expected in (([], False), (["--collapse-repeats"], True), (["--no-collapse-repeats"], False)):
        out = tmp_path / f"fewshot{len(flag[0]) if flag else 0}"
        assert cli_main(["evaluate", "fewshot", "--data", str(tone_data["task"]), "--episodes", "2", "--methods",
                         "icl", "--output", str(out), "--no-progress", *models, *flag]) == 0
        rows = json.loads((out / "results.json").read_text())["results"]
        assert [r["collapse_repeats"] for r in rows] == [expected]  # the default resolves to off for this codec
        assert ("repeated layer-1 words collapsed" in (out / "results.md").read_text()) == expected
        report = tmp_path / f"classify{len(flag[0]) if flag else 0}.json"
        assert cli_main(["classify", "--demos", str(tone_data["plain"]), "--queries", str(tone_data["queries"]),
                         "--output", str(report), *models, *flag]) == 0
        assert json.loads(report.read_text())["collapse_repeats"] is expected
    assert seen["evaluate"] == [None, True, False]  # None: automatic (on only for a teacher-computed layer 1)
    assert seen["context"] == [None, True, False]  # classify's call of the pipeline (evaluate scores through the harness)


def test_cli_evaluate_fewshot_logmel_loads_no_model(tone_data, tmp_path, capsys, monkeypatch):
    from llm_codec.evaluation import fewshot_cli

    def no_models(*args, **kwargs):
        raise AssertionError("--methods logmel must not load a model")

    monkeypatch.setattr(fewshot_cli, "load_models", no_models)
    out = tmp_path / "logmel"
    code = cli_main(["evaluate", "fewshot", "--data", str(tone_data["task"]), "--settings", "2x1,3x1",
                     "--episodes", "2", "--queries-per-class", "1", "--methods", "logmel", "--output", str(out),
                     "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert [(r["n_way"], r["method"]) for r in results] == [(2, "logmel"), (3, "logmel")]
    assert all(r["n"] == r["n_way"] * 2 and r["encode_seconds"] == 0.0 for r in results)
    assert "| tones | 3 | 1 | logmel |" in capsys.readouterr().out
    # an LM method does load the models (here refused by the stub: an unexpected failure, exit 1)
    assert cli_main(["evaluate", "fewshot", "--data", str(tone_data["task"]), "--methods", "icl,logmel",
                     "--output", str(out), "--no-progress"]) == 1
    assert "must not load" in capsys.readouterr().err
    # classify scores with the LM only
    assert cli_main(["classify", "--demos", str(tone_data["plain"]), "--queries", str(tone_data["queries"]),
                     "--method", "logmel"]) == 2
    assert "choose among icl, calibrated, embedding" in capsys.readouterr().err


def test_cli_another_llm_reads_layer1_as_text(saved_models, tone_data, tmp_path, capsys):
    """--lm of another vocabulary: refused with ids (exit 2, the vocabulary named), scored with --audio-format text."""
    codec, _ = saved_models
    other = foreign_tokenizer(VOCAB)
    foreign = tmp_path / "foreign_lm"
    foreign_llama(other).save_pretrained(foreign)
    other.save_pretrained(foreign)
    base = ["evaluate", "fewshot", "--data", str(tone_data["task"]), "--episodes", "2", "--methods", "icl",
            "--model", str(codec), "--lm", str(foreign), "--device", "cpu", "--no-progress"]
    assert cli_main([*base, "--output", str(tmp_path / "ids")]) == 2
    assert "fingerprint" in capsys.readouterr().err
    assert cli_main([*base, "--output", str(tmp_path / "text"), "--audio-format", "text"]) == 0
    rows = json.loads((tmp_path / "text" / "results.json").read_text())["results"]
    assert [r["method"] for r in rows] == ["icl"] and rows[0]["n"] == 2 * 2 * 2
    unknown = [x if x != str(foreign) else "no/such-lm" for x in base]
    assert cli_main([*unknown, "--audio-format", "text", "--output", str(tmp_path / "x")]) == 2
    assert "neither a local LM folder nor an offline LM name" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--methods", "icl,knn"], "choose among"),
        (["--shots", "4"], "w50: 4 clips, needs 6"),
        (["--data", "/nonexistent/folder"], "No folder or manifest"),
    ],
)
def test_cli_evaluate_fewshot_errors(saved_models, tone_data, tmp_path, capsys, arguments, message):
    codec, lm = saved_models
    base = {"--data": str(tone_data["task"]), "--output": str(tmp_path), "--model": str(codec), "--lm": str(lm)}
    base.update(dict(zip(arguments[::2], arguments[1::2])))
    code = cli_main(["evaluate", "fewshot", *[x for pair in base.items() for x in pair]])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("llm-codec evaluate: error:") and message in error


def test_cli_generate(saved_models, tone_data, tmp_path, capsys):
    codec, lm = saved_models
    demos = tmp_path / "pairs"
    for side in ("input", "output"):
        (demos / side).mkdir(parents=True)
    for i in range(2):
        sf.write(demos / "input" / f"{i}.wav", tone(220.0, i, 480), RATE)
        sf.write(demos / "output" / f"{i}.wav", tone(880.0, i, 480), RATE)
    output = tmp_path / "generated.wav"
    code = cli_main(["generate", "--demos", str(demos), "--query", str(tone_data["plain"] / "w50" / "0.wav"),
                     "--output", str(output), "--max-words", "4", "--separator", "<sep>", "--seed", "0",
                     "--model", str(codec), "--lm", str(lm), "--device", "cpu"])
    assert code == 0 and "wrote" in capsys.readouterr().out
    audio, rate = sf.read(output)
    assert rate == RATE and 0 < len(audio) <= 4 * 4 * 6  # at most 4 words x 4 frames x hop 6
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"input": "w80", "output": "pairs/output/0.wav"}, ["input/1.wav", "output/1.wav"]]))
    (tmp_path / "input").mkdir()
    (tmp_path / "output").mkdir()
    sf.write(tmp_path / "input" / "1.wav", tone(220.0, 1, 480), RATE)
    sf.write(tmp_path / "output" / "1.wav", tone(880.0, 1, 480), RATE)
    code = cli_main(["generate", "--demos", str(pairs), "--query", "w81", "--output", str(output), "--overwrite", "--max-words", "2",
                     "--separator", "<sep>", "--model", str(codec), "--lm", str(lm), "--device", "cpu"])
    assert code == 0
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps([["w80", "nowhere.wav"]]))
    code = cli_main(["generate", "--demos", str(missing), "--query", "w81", "--output", str(output),
                     "--model", str(codec), "--lm", str(lm)])
    assert code == 2 and "nowhere.wav" in capsys.readouterr().err
