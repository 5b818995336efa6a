"""Speed and memory of a codec: encode and decode times of the bundled speech clip, peak resident memory."""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass
from importlib.resources import files

import numpy as np
import torch

from ..audio_io import load_mono_audio


@dataclass
class BenchmarkResult:
    """
    Result of `benchmark_codec` (times in seconds, memory in MB = 10^6 bytes).

    Attributes:
        seconds (`float`): length of the benchmark clip. repeats (`int`), threads (`int`): torch threads used.
        encode_first_s (`float`): first encode (includes projecting the codebooks once).
        encode_s, decode_s (`float`): median of `repeats` runs; encode_runs_s / decode_runs_s: every run.
        real_time_factor (`float`): (encode_s + decode_s) / seconds. encode_rtf, decode_rtf: each alone.
        peak_rss_mb (`float`): peak resident memory of this process so far (model loading included).
        tokens_per_second (`float`), bitrate (`float`): from the codec config.
        method (`str`): how it was measured.
    """

    seconds: float
    repeats: int
    threads: int
    encode_first_s: float
    encode_s: float
    decode_s: float
    encode_runs_s: list[float]
    decode_runs_s: list[float]
    real_time_factor: float
    encode_rtf: float
    decode_rtf: float
    peak_rss_mb: float
    tokens_per_second: float
    bitrate: float
    method: str


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (10^6 bytes; Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def benchmark_audio(seconds: float, sampling_rate: int) -> torch.Tensor:
    """The bundled speech clip (`llm_codec/assets/example_speech.flac`) repeated to `seconds`: (1, 1, samples)."""
    clip = load_mono_audio(str(files("llm_codec") / "assets" / "example_speech.flac"), sampling_rate)
    total = int(round(seconds * sampling_rate))
    if total < 1:
        raise ValueError(f"--seconds must be positive, got {seconds}.")
    return torch.from_numpy(np.resize(clip, total).astype(np.float32))[None, None]


@torch.no_grad()
def benchmark_codec(codec, seconds: float = 10.0, repeats: int = 3, seed: int = 0) -> BenchmarkResult:
    """
    Times `codec` on the bundled speech clip repeated to `seconds`.

    Args:
        codec (`LLMCodecModel`): the codec (put in eval mode).
        seconds (`float`, defaults to 10): clip length.
        repeats (`int`, defaults to 3): timed runs of encode and of decode (medians are reported).
        seed (`int`, defaults to 0): seed of the decoder noise.

    Returns:
        `BenchmarkResult`.
    """
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}.")
    codec.eval()
    audio = benchmark_audio(seconds, int(codec.config.sample_rate)).to(codec.device)
    start = time.perf_counter()
    encoded = codec.encode(audio)
    encode_first = time.perf_counter() - start
    encode_runs, decode_runs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        encoded = codec.encode(audio)
        encode_runs.append(time.perf_counter() - start)
    generator = torch.Generator(device=codec.device)
    codec.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths, generator=generator.manual_seed(seed))
    for _ in range(repeats):
        start = time.perf_counter()
        codec.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths, generator=generator.manual_seed(seed))
        decode_runs.append(time.perf_counter() - start)
    encode_s, decode_s = statistics.median(encode_runs), statistics.median(decode_runs)
    method = (
        f"Input: the bundled speech clip repeated to {seconds:g} s at {codec.config.sample_rate} Hz, batch 1, "
        f"{torch.get_num_threads()} torch thread(s), device {codec.device}, dtype {codec.dtype}. Encode once untimed "
        f"apart (first call, projects and caches the codebooks), then {repeats} timed encodes; decode once untimed, "
        f"then {repeats} timed decodes of the same codes (seeded noise). Wall times by time.perf_counter, medians "
        "reported; real-time factor = (encode + decode) / clip duration (below 1: faster than real time). Peak RSS: "
        "getrusage ru_maxrss of this process, model loading included."
    )
    return BenchmarkResult(
        seconds=float(seconds),
        repeats=int(repeats),
        threads=torch.get_num_threads(),
        encode_first_s=encode_first,
        encode_s=encode_s,
        decode_s=decode_s,
        encode_runs_s=encode_runs,
        decode_runs_s=decode_runs,
        real_time_factor=(encode_s + decode_s) / seconds,
        encode_rtf=encode_s / seconds,
        decode_rtf=decode_s / seconds,
        peak_rss_mb=peak_rss_mb(),
        tokens_per_second=float(sum(codec.config.tokens_per_second)),
        bitrate=float(codec.config.bitrate),
        method=method,
    )


__all__ = ["BenchmarkResult", "benchmark_audio", "benchmark_codec", "peak_rss_mb"]
