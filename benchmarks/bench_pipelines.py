"""Speed of few-shot classification with the offline default LM: shared-prompt KV cache vs naive scoring.

Method: a 3-way 1-shot episode with 1 s clips (three tones for the demonstrations, 32 noisy tone queries), the
default codec built from SmolLM2-135M-Instruct's vocabulary (encoder/decoder weights do not affect speed) and the
default LM in float32 on the CPU. The prompt is the paper's format (instruction, `###\\nInput: ...\\nOutput: label`).
Measured, each as the median of --repeats runs after one warm-up:
  * naive: one full forward pass of prefix + query + label for every (query, label) (`score_labels_naive`);
  * cached, one query at a time: prefix once, then the query and its labels on the copied KV cache;
  * cached, batch of 32 queries: the same with all queries in one batch (`score_labels`, batch_size=32);
  * the whole pipeline call for 32 queries (codec encoding + prompt building + cached scoring).
Target: at least 5x more queries per second with the cache (batch of 32) than naive.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--naive-queries", type=int, default=4, help="queries timed on the (slow) naive path")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)

    import llm_codec  # noqa: F401  (registers the pipelines)
    from transformers import pipeline

    from llm_codec.default_model import load_default_codec

    print(__doc__)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    codec, trained, (lm, tokenizer) = load_default_codec()
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu")
    rate = 16000
    t = np.arange(rate) / rate
    rng = np.random.default_rng(0)
    freqs = {"low": 220.0, "middle": 660.0, "high": 1760.0}
    demos = [((0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), label) for label, f in freqs.items()]
    queries = [
        (0.3 * np.sin(2 * np.pi * list(freqs.values())[i % 3] * 1.05 * t) + 0.02 * rng.standard_normal(rate)).astype(np.float32)
        for i in range(args.queries)
    ]
    labels = list(freqs)
    processor = pipe.codec_processor
    demo_ids = [processor.codes_to_ids(c)[0] for c in pipe.encode_audio([a for a, _ in demos], rate)]
    query_ids = [processor.codes_to_ids(c)[0] for c in pipe.encode_audio(queries, rate)]
    prefix = pipe.build_prefix(demo_ids, labels, labels)
    label_tokens = [len(i) for i in pipe.label_ids(labels)]
    print(f"prompt prefix {len(prefix)} tokens, query suffix ~{len(pipe.query_suffix(query_ids[0]))} tokens, "
          f"label tokens {label_tokens}")

    naive_subset = query_ids[: args.naive_queries]
    naive = timed(lambda: pipe.score_labels_naive(prefix, naive_subset, labels), args.repeats) / len(naive_subset)
    cached_single = timed(lambda: [pipe.score_labels(prefix, [q], labels, batch_size=1) for q in naive_subset], args.repeats) / len(naive_subset)
    cached_batch = timed(lambda: pipe.score_labels(prefix, query_ids, labels, batch_size=len(query_ids)), args.repeats)
    whole = timed(lambda: pipe(queries, demonstrations=demos, sampling_rate=rate, batch_size=len(queries)), args.repeats)
    agree = np.abs(pipe.score_labels(prefix, naive_subset, labels) - pipe.score_labels_naive(prefix, naive_subset, labels)).max()

    figures = {
        "naive_s_per_query": naive,
        "cached_single_s_per_query": cached_single,
        "cached_batch32_s_per_query": cached_batch / len(query_ids),
        "naive_qps": 1 / naive,
        "cached_single_qps": 1 / cached_single,
        "cached_batch32_qps": len(query_ids) / cached_batch,
        "pipeline_call_32_queries_s": whole,
        "pipeline_qps": len(queries) / whole,
        "max_abs_score_difference_cached_vs_naive": float(agree),
    }
    figures["speedup_batch32_vs_naive"] = figures["cached_batch32_qps"] / figures["naive_qps"]
    print()
    print("| path | s / query | queries / s |")
    print("| --- | --- | --- |")
    print(f"| naive (full forward per label and query) | {naive:.3f} | {1 / naive:.1f} |")
    print(f"| cached prefix, one query at a time | {cached_single:.3f} | {1 / cached_single:.1f} |")
    print(f"| cached prefix, batch of {len(query_ids)} | {cached_batch / len(query_ids):.4f} | {len(query_ids) / cached_batch:.1f} |")
    print(f"| whole pipeline call, {len(queries)} queries (incl. codec) | {whole / len(queries):.4f} | {len(queries) / whole:.1f} |")
    print(f"\nspeed-up of the cached batch over naive: {figures['speedup_batch32_vs_naive']:.1f}x (target >= 5x); "
          f"max |score difference| {agree:.2e}")
    ok = figures["speedup_batch32_vs_naive"] >= 5 and agree < 1e-3
    print("PASS" if ok else "FAIL")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(figures, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
