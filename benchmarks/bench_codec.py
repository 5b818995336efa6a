#!/usr/bin/env python
"""Speed, memory and correctness benchmark of LLM-Codec on CPU, with the released hyper-parameters.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_codec.py [--seconds 10] [--repeats 3] [--threads N]
        [--long-minutes 10] [--original-repo PATH] [--output OUT]

The model has the released architecture (hop 480, three VQ layers with 3248/32000/32000 x 4096 codebooks) and
seeded random weights: codebooks N(0, 0.02) like LLM embedding tables (layers 2 and 3 share one table, as in the
release), every other weight perturbed away from its initialisation. The input is a seeded mix of gliding,
amplitude-modulated sines plus noise at 16 kHz (peak about 0.3). See benchmarks/README.md for what each figure means.

Exits 1 when a target fails (encode/decode speed, peak memory, code identity), 0 otherwise.
"""

import argparse
import gc
import importlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from llm_codec import LLMCodecConfig, LLMCodecModel  # noqa: E402
from llm_codec.conversion.convert_llm_codec_checkpoint import (  # noqa: E402
    DROPPED_KEY_PATTERN,
    fold_weight_norm,
    rename_state_dict,
)

SAMPLE_RATE = 16000
WEIGHT_SEED = 0
AUDIO_SEED = 1234
DECODE_SEED = 1234
CHILD_MARKER = "@@BENCH_CHILD_RESULT@@"
BATCH_SECONDS = (3.1, 5.0, 2.2, 7.7)

TARGETS = {  # for a 10 s clip; the time targets scale linearly with --seconds
    "encode_steady_s": 1.5,  # encode, steady state, below
    "decode_s": 4.0,  # decode of the same codes, below
    "peak_rss_10s_mb": 3000.0,  # load + encode + decode in a fresh process, below (MB = 10^6 bytes)
}


# --------------------------------------------------------------------------------------------------------- helpers


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux), in MB (10^6 bytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


class Timings:
    """Wall and CPU (all threads of this process) seconds of repeated calls."""

    def __init__(self):
        self.wall, self.cpu = [], []

    def run(self, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        return result

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def runs(self) -> str:
        return "runs " + ", ".join(f"{t:.3f}" for t in self.wall)

    def as_dict(self) -> dict:
        return {"median_s": self.median, "wall_s": self.wall, "cpu_s": self.cpu, "cpu_median_s": self.cpu_median}


def repeat_timed(fn, repeats: int):
    """Runs `fn` `repeats` times; returns (Timings, last result)."""
    timings, result = Timings(), None
    for _ in range(repeats):
        result = timings.run(fn)
    return timings, result


def make_audio(seconds: float, seed: int, sample_rate: int = SAMPLE_RATE, block_s: float = 10.0) -> torch.Tensor:
    """
    Seeded test signal (1, 1, samples), float32: five sines whose frequencies glide slowly (FM) with their own
    amplitude envelopes (AM), plus white noise; |x| stays below about 0.31. Generated in blocks of `block_s` so that a
    long input costs only its own float32 buffer (the memory figures are not inflated by temporaries).
    """
    total = int(round(seconds * sample_rate))
    rng = np.random.default_rng(seed)
    f0 = rng.uniform(90.0, 2500.0, 5)
    depth = rng.uniform(0.05, 0.4, 5) * f0
    fm = rng.uniform(0.05, 0.7, 5)
    am = rng.uniform(0.2, 3.0, 5)
    am_phase = rng.uniform(0, 2 * np.pi, 5)
    weights = rng.uniform(0.3, 1.0, 5)
    weights = weights / weights.sum()
    out = torch.empty(1, 1, total, dtype=torch.float32)
    block = int(block_s * sample_rate)
    for index, start in enumerate(range(0, total, block)):
        n = min(block, total - start)
        t = (start + np.arange(n)) / sample_rate
        x = np.zeros(n)
        for k in range(5):
            # instantaneous frequency f0 + depth * sin(2 pi fm t): phase is its integral
            phase = 2 * np.pi * f0[k] * t - depth[k] / fm[k] * np.cos(2 * np.pi * fm[k] * t)
            envelope = 0.6 + 0.4 * np.sin(2 * np.pi * am[k] * t + am_phase[k])
            x += weights[k] * envelope * np.sin(phase)
        noise = np.random.default_rng([seed, index]).standard_normal(n)
        out[0, 0, start : start + n] = torch.from_numpy((0.3 * x + 0.01 * noise).astype(np.float32))
    return out


def build_model(seed: int = WEIGHT_SEED) -> LLMCodecModel:
    """
    Released architecture, seeded random weights. Codebooks ~ N(0, 0.02) (layer 3 = layer 2, as in the release,
    where both are the LLaMA-2 table); other weights perturbed so the model is not at its initialisation: matrices
    and kernels + 10% of their std in Gaussian noise, biases + N(0, 1e-3), LayerNorm scales + N(0, 0.02), Snake
    alphas ~ |1 + N(0, 0.2)| + 0.05. (Larger bias offsets make every latent frame point the same way and collapse
    the codes onto a handful of entries, which would make the code-identity checks weak.)
    """
    torch.manual_seed(seed)
    model = LLMCodecModel(LLMCodecConfig()).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        layers = model.quantizer.layers
        layers[0].codebook.normal_(0.0, 0.02, generator=generator)
        layers[1].codebook.normal_(0.0, 0.02, generator=generator)
        layers[2].codebook.copy_(layers[1].codebook)
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("alpha"):
                param.copy_((1.0 + 0.2 * noise).abs() + 0.05)
            elif param.dim() >= 2:
                param.add_(noise * (0.1 * float(param.std())))
            elif name.endswith("bias"):
                param.add_(1e-3 * noise)
            else:
                param.add_(0.02 * noise)
    return model


def reference_codes(model: LLMCodecModel, latents: torch.Tensor) -> list[torch.Tensor]:
    """
    The original lookup algorithm, written plainly: per layer, average-pool by the stride, project the FULL codebook
    with codebook_proj (on every call), L2-normalise frames and projected codebook, distance |e|^2 - 2 e.c + |c|^2,
    argmin, quantized = un-normalised projected row repeated `stride` times, subtracted from the residual.
    """
    residual, codes = latents.float(), []
    for layer in model.quantizer.layers:
        pooled = F.avg_pool1d(residual, layer.stride, layer.stride) if layer.stride > 1 else residual
        table = layer.codebook_proj(layer.codebook.float())
        encodings = F.normalize(pooled.transpose(1, 2).reshape(-1, pooled.shape[1]))
        codebook = F.normalize(table)
        dist = (
            encodings.pow(2).sum(1, keepdim=True)
            - 2 * encodings @ codebook.t()
            + codebook.pow(2).sum(1, keepdim=True).t()
        )
        indices = dist.argmin(1).view(pooled.shape[0], -1)
        quantized = F.embedding(indices, table).transpose(1, 2).repeat_interleave(layer.stride, dim=-1)
        residual = residual - quantized
        codes.append(indices)
    return codes


def agreement(a, b) -> list[float]:
    """Per layer, the fraction of equal codes (shapes must match; a mismatch counts as 0.0)."""
    out = []
    for x, y in zip(a, b):
        out.append(float((x == y).float().mean()) if x.shape == y.shape else 0.0)
    return out


def fmt_fracs(values) -> str:
    return " / ".join(f"{v:.4f}" for v in values)


# ------------------------------------------------------------------------------------------------ child processes
#
# Peak RSS is read with getrusage(RUSAGE_SELF).ru_maxrss in a fresh process. On Linux a child's ru_maxrss starts
# from the RSS of the parent at fork/exec time, so the children are started while this (parent) process holds only
# its imports: the model is built and saved by a child too, and loaded here only after the memory children ran.
# Each child also reports VmHWM (/proc/self/status), the high-water mark of its own address space, as a cross-check.


def vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return None


def child_main(args) -> int:
    """Runs one step in this fresh process and prints its figures as one JSON line."""
    torch.set_num_threads(args.threads)
    result = {"rss_after_imports_mb": peak_rss_mb()}
    if args._child == "build":
        build_s, model = timed(build_model)
        save_s, _ = timed(lambda: model.save_pretrained(args._model_dir))
        result.update(
            build_s=build_s,
            save_s=save_s,
            parameters=sum(p.numel() for p in model.parameters()),
            codebook_entries=sum(layer.codebook.shape[0] for layer in model.quantizer.layers),
        )
        print(CHILD_MARKER + json.dumps(result), flush=True)
        return 0
    with torch.no_grad():
        load_s, model = timed(lambda: LLMCodecModel.from_pretrained(args._model_dir).eval())
        result["load_s"] = load_s
        result["rss_after_load_mb"] = peak_rss_mb()
        x = make_audio(args.seconds, AUDIO_SEED)
        if args._child == "mem10s":
            encode_s, encoded = timed(lambda: model.encode(x))
            result["encode_s"] = encode_s
            result["rss_after_encode_mb"] = peak_rss_mb()
            decode_s, _ = timed(lambda: model.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths))
            result["decode_s"] = decode_s
        elif args._child == "memlong":
            model.encode(x)  # a short encode first: projected tables and the kernels' working memory are in place
            result["rss_after_short_encode_mb"] = peak_rss_mb()
            del x
            long_input = make_audio(args.long_minutes * 60.0, AUDIO_SEED + 1)
            result["long_samples"] = int(long_input.shape[-1])
            result["rss_after_long_input_mb"] = peak_rss_mb()
            encode_s, encoded = timed(lambda: model.encode(long_input))
            result["long_encode_s"] = encode_s
            result["long_code_lengths"] = [int(c.shape[-1]) for c in encoded.audio_codes]
        else:
            raise ValueError(f"unknown child step {args._child!r}")
    result["peak_rss_mb"] = peak_rss_mb()
    result["vm_hwm_mb"] = vm_hwm_mb()
    print(CHILD_MARKER + json.dumps(result), flush=True)
    return 0


def run_child(step: str, args, model_dir: str) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_child",
        step,
        "--_model-dir",
        model_dir,
        "--threads",
        str(args.threads),
        "--seconds",
        str(args.seconds),
        "--long-minutes",
        str(args.long_minutes),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in completed.stdout.splitlines():
        if line.startswith(CHILD_MARKER):
            return json.loads(line[len(CHILD_MARKER) :])
    raise RuntimeError(
        f"child step '{step}' failed (exit {completed.returncode}):\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    )


# ---------------------------------------------------------------------------------------------- original (optional)


def build_original(original_repo: str, model: LLMCodecModel, workdir: str):
    """
    The original `codec.MSCodec.MSCodecLM`, imported from `original_repo`, with the same hyper-parameters, its
    codebooks read from files written here in its format ({'weight': table} and a bare tensor), and our weights
    loaded into it: weight_v = our weight, weight_g = its norm over all dimensions but 0 (the original uses old-style
    `torch.nn.utils.weight_norm` with dim 0).
    """
    config = model.config
    sys.path.insert(0, str(Path(original_repo).resolve()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mscodec = importlib.import_module("codec.MSCodec")
    layers = model.quantizer.layers
    if not torch.equal(layers[1].codebook, layers[2].codebook):
        raise RuntimeError("the original shares one table between VQ layers 2 and 3, but ours differ")
    local_path, global_path = os.path.join(workdir, "embed_local.pt"), os.path.join(workdir, "embed_global.pt")
    torch.save({"weight": layers[1].codebook.clone()}, local_path)
    torch.save(layers[0].codebook.clone(), global_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = mscodec.MSCodecLM(
            sample_rate=config.sample_rate,
            encoder_dim=config.encoder_dim,
            encoder_rates=list(config.encoder_rates),
            latent_dim=config.latent_dim,
            decoder_dim=config.decoder_dim,
            decoder_rates=list(config.decoder_rates),
            attn_window_size=config.attn_window_size,
            vq_strides=list(config.vq_strides),
            use_cblinear=config.use_cblinear,
            local_embedding_path=local_path,
            global_embedding_path=global_path,
            noise=config.noise,
            depthwise=config.depthwise,
        ).eval()
    ours = model.state_dict()
    new_state = {}
    for key, value in original.state_dict().items():
        if DROPPED_KEY_PATTERN.search(key):  # rotary inv_freq: recomputed, not ours to set
            new_state[key] = value
            continue
        if key.endswith((".weight_g", ".weight_v")):
            weight = ours[next(iter(rename_state_dict({key[: -len("_g")]: value}, config)))].float()
            if key.endswith("_v"):
                new_state[key] = weight.clone()
            else:
                new_state[key] = weight.pow(2).sum(dim=tuple(range(1, weight.dim())), keepdim=True).sqrt()
        else:
            new_state[key] = ours[next(iter(rename_state_dict({key: value}, config)))].clone()
        if new_state[key].shape != value.shape:
            raise RuntimeError(f"shape mismatch for {key}: ours {tuple(new_state[key].shape)} vs {tuple(value.shape)}")
    original.load_state_dict(new_state, strict=True)
    return original


def converted_from_original(original, config: LLMCodecConfig) -> LLMCodecModel:
    """Our model built from the original's state dict with the repository's converter (fold_weight_norm + rename)."""
    state = rename_state_dict(fold_weight_norm(original.state_dict()), config)
    model = LLMCodecModel(config).eval()
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model


# ----------------------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the test clip in seconds (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats for steady-state medians (default 3)")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--original-repo", default=None, help="checkout of github.com/yangdongchao/LLM-Codec")
    parser.add_argument("--output", default=None, help="write all figures to this JSON file")
    parser.add_argument(
        "--long-minutes", type=float, default=10.0, help="length of the long-input encode in minutes (default 10)"
    )
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_model-dir", dest="_model_dir", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def speedup(theirs: float, ours: float) -> str:
    return f"{theirs / ours:.1f}x" if ours > 0 else "n/a"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    if args._child:
        return child_main(args)
    torch.set_num_threads(args.threads)
    repeats = max(1, args.repeats)
    cores = os.cpu_count() or 1
    figures: dict = {}
    sections: dict[str, list[tuple[str, str, str]]] = {}

    def row(section, name, value, note=""):
        sections.setdefault(section, []).append((name, value, note))

    load_samples: list[float] = []  # 1-minute load average, sampled at every step

    def progress(message):
        try:
            load_samples.append(os.getloadavg()[0])
        except OSError:
            pass
        print(f"... {message}", file=sys.stderr, flush=True)

    machine = {
        "cpu_model": cpu_model(),
        "logical_cores": cores,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average_start": load_average(),
    }
    try:
        import transformers

        machine["transformers"] = transformers.__version__
    except ImportError:
        pass
    method = {
        "clip_seconds": args.seconds,
        "repeats": repeats,
        "long_minutes": args.long_minutes,
        "weights": f"released architecture, seeded random weights (seed {WEIGHT_SEED}), codebooks N(0, 0.02)",
        "audio": f"seeded FM/AM sines + noise at 16 kHz, peak ~0.3 (seed {AUDIO_SEED})",
        "timing": "time.perf_counter wall time under torch.no_grad(); steady state = median of repeats after one warm-up",
        "memory": "peak RSS (getrusage ru_maxrss) of a fresh subprocess that loads the saved model with from_pretrained",
    }
    print("=" * 110)
    print("LLM-Codec benchmark (benchmarks/bench_codec.py)")
    print("-" * 110)
    print("Method:")
    print(f"  model    : {method['weights']};")
    print("             layer 3 shares layer 2's table (as released); other weights perturbed away from init")
    print(f"  input    : {args.seconds:g} s, {method['audio']}")
    print(f"  timing   : {method['timing']};")
    print(f"             repeats = {repeats}; CPU time (all threads) is reported next to wall time")
    print(f"  memory   : {method['memory']}; long input = {args.long_minutes:g} min")
    print("  correct  : codes vs a plain re-implementation of the original lookup on model.encode_latents(x);")
    print("             bf16 vs fp32; batched (padding_mask) vs one-by-one"
          + ("; the original MSCodecLM (same weights)" if args.original_repo else ""))
    print("Machine:")
    print(f"  cpu      : {machine['cpu_model']}, {cores} logical cores")
    print(
        f"  software : python {machine['python']}, torch {machine['torch']}, transformers {machine.get('transformers')}, "
        f"numpy {machine['numpy']}"
    )
    print(f"  threads  : {machine['threads']} (torch intra-op); load average at start {machine['load_average_start']}")
    print("=" * 110, flush=True)

    workdir = tempfile.mkdtemp(prefix="llm_codec_bench_")
    orig_vs_conv = audio_diff = None
    try:
        model_dir = os.path.join(workdir, "model")
        # ---------------------------------------------------------------------------- build (child), memory (children)
        progress("building the seeded model and saving it (subprocess)")
        built = run_child("build", args, model_dir)
        row("setup", "build random model (seeded, subprocess)", f"{built['build_s']:.2f} s",
            f"{built['parameters'] / 1e6:.1f} M parameters + {built['codebook_entries']} x 4096 codebook rows")
        row("setup", "save_pretrained (safetensors)", f"{built['save_s']:.2f} s")
        figures["setup"] = dict(built)

        progress("[2] memory: load + encode + decode in a fresh process")
        parent_rss = peak_rss_mb()
        mem10 = run_child("mem10s", args, model_dir)
        progress(f"[2] memory: encode of {args.long_minutes:g} min in a fresh process")
        memlong = run_child("memlong", args, model_dir)
        s2 = "2. peak memory (fresh processes, ru_maxrss)"
        row(s2, f"(a) load + encode + decode {args.seconds:g} s", f"{mem10['peak_rss_mb']:.0f} MB",
            f"after imports {mem10['rss_after_imports_mb']:.0f} / load {mem10['rss_after_load_mb']:.0f} / "
            f"encode {mem10['rss_after_encode_mb']:.0f} MB; VmHWM {mem10['vm_hwm_mb']:.0f} MB")
        row(s2, f"(b) load + encode {args.seconds:g} s, then {args.long_minutes:g} min", f"{memlong['peak_rss_mb']:.0f} MB",
            f"before the long encode {memlong['rss_after_long_input_mb']:.0f} MB "
            f"(+{memlong['peak_rss_mb'] - memlong['rss_after_long_input_mb']:.0f} MB for it); VmHWM {memlong['vm_hwm_mb']:.0f} MB")
        row(s2, f"encode {args.long_minutes:g} min (one call, chunked inside)", f"{memlong['long_encode_s']:.2f} s",
            f"{args.long_minutes * 60 / memlong['long_encode_s']:.1f}x real time; codes {memlong['long_code_lengths']}")
        row(s2, "(load from_pretrained in (a))", f"{mem10['load_s']:.2f} s",
            f"parent RSS when the children started: {parent_rss:.0f} MB")
        figures["memory"] = {"load_encode_decode": mem10, "long_encode": memlong, "parent_rss_at_spawn_mb": parent_rss}

        progress("loading the model in this process")
        load_s, model = timed(lambda: LLMCodecModel.from_pretrained(model_dir).eval())
        config = model.config
        row("setup", "load (from_pretrained, this process)", f"{load_s:.2f} s")
        figures["setup"]["load_s"] = load_s
        x = make_audio(args.seconds, AUDIO_SEED)

        # ---------------------------------------------------------------------------------------------- 1. speed
        progress("[1] speed")
        s1 = f"1. speed ({args.seconds:g} s clip, fp32)"
        with torch.no_grad():
            first_s, encoded = timed(lambda: model.encode(x))  # also the warm-up
            encode_t, encoded = repeat_timed(lambda: model.encode(x), repeats)
            codes = encoded.audio_codes
            model.decode(codes, audio_lengths=encoded.audio_lengths)  # warm-up
            decode_t, decoded = repeat_timed(lambda: model.decode(codes, audio_lengths=encoded.audio_lengths), repeats)
            latent_t, latents = repeat_timed(lambda: model.encode_latents(x), repeats)
            quant_t, _ = repeat_timed(lambda: model.quantizer(latents), repeats)

            def project_all():
                for layer in model.quantizer.layers:
                    layer.clear_cache()
                    layer.search_table()

            project_s, _ = timed(project_all)
        encode_med, decode_med = encode_t.median, decode_t.median
        row(s1, "encode, first call (projects the codebooks once)", f"{first_s:.3f} s")
        row(s1, "encode, steady state (median)", f"{encode_med:.3f} s",
            f"{args.seconds / encode_med:.1f}x real time; CPU {encode_t.cpu_median:.3f} s; {encode_t.runs()}")
        row(s1, "  encoder only (encode_latents, median)", f"{latent_t.median:.3f} s")
        row(s1, "  quantizer only, cached tables (median)", f"{quant_t.median:.3f} s")
        row(s1, "codebook projection, all layers (one-off)", f"{project_s:.3f} s", "what the first call pays extra")
        row(s1, "decode (median)", f"{decode_med:.3f} s",
            f"{args.seconds / decode_med:.1f}x real time; CPU {decode_t.cpu_median:.3f} s; {decode_t.runs()}")
        row(s1, "codes per layer (distinct values)", " / ".join(str(c.shape[-1]) for c in codes),
            "(" + " / ".join(str(int(c.unique().numel())) for c in codes) + ")")
        figures["speed"] = {
            "encode_first_s": first_s,
            "encode_steady": encode_t.as_dict(),
            "encode_latents": latent_t.as_dict(),
            "quantizer_cached": quant_t.as_dict(),
            "codebook_projection_s": project_s,
            "decode": decode_t.as_dict(),
            "code_lengths": [int(c.shape[-1]) for c in codes],
            "distinct_codes": [int(c.unique().numel()) for c in codes],
            "decoded_samples": int(decoded.audio_values.shape[-1]),
        }

        # --------------------------------------------------------------------------------------- 3. correctness
        progress("[3] reference lookup")
        s3 = "3. correctness vs the plain reference lookup"
        with torch.no_grad():
            model.encode(x)  # repopulate the cached tables
            ref_t, ref_codes = repeat_timed(lambda: reference_codes(model, latents), repeats)
        ref_agree = agreement(codes, ref_codes)
        row(s3, "codes == reference, per layer", fmt_fracs(ref_agree), "expected 1.0")
        row(s3, "reference lookup (median)", f"{ref_t.median:.3f} s",
            f"the original's per-call quantizer cost; ours (cached) {quant_t.median:.3f} s")
        figures["reference"] = {"agreement": ref_agree, "reference_lookup": ref_t.as_dict()}

        # ---------------------------------------------------------------------------------------------- 4. bf16
        progress("[4] bfloat16")
        s4 = "4. bfloat16 (same weights, .to(torch.bfloat16))"
        model_bf16 = LLMCodecModel.from_pretrained(model_dir).eval().to(torch.bfloat16)
        with torch.no_grad():
            bf16_first, _ = timed(lambda: model_bf16.encode(x))
            bf16_t, bf16_out = repeat_timed(lambda: model_bf16.encode(x), repeats)
        bf16_agree = agreement(codes, bf16_out.audio_codes)
        row(s4, "bf16 encode, first call", f"{bf16_first:.3f} s")
        row(s4, "bf16 encode, steady state (median)", f"{bf16_t.median:.3f} s", f"CPU {bf16_t.cpu_median:.3f} s; {bf16_t.runs()}")
        row(s4, "bf16 codes == fp32 codes, per layer", fmt_fracs(bf16_agree), "informative (no target)")
        figures["bf16"] = {"encode_first_s": bf16_first, "encode_steady": bf16_t.as_dict(), "agreement_with_fp32": bf16_agree}
        del model_bf16, bf16_out
        gc.collect()

        # ------------------------------------------------------------------------------------------- 5. batched
        progress("[5] batched encoding")
        s5 = "5. batched encoding (padding_mask) vs one by one"
        clips = [make_audio(s, AUDIO_SEED + 10 + i) for i, s in enumerate(BATCH_SECONDS)]
        longest = max(c.shape[-1] for c in clips)
        batch = torch.zeros(len(clips), 1, longest)
        mask = torch.zeros(len(clips), longest, dtype=torch.long)
        for i, clip in enumerate(clips):
            batch[i, :, : clip.shape[-1]] = clip[0]
            mask[i, : clip.shape[-1]] = 1
        with torch.no_grad():
            batched_s, batched = timed(lambda: model.encode(batch, padding_mask=mask))
            singles_s, singles = timed(lambda: [model.encode(c) for c in clips])
        equal = [0] * config.num_quantizers
        total = [0] * config.num_quantizers
        for i, single in enumerate(singles):
            for k in range(config.num_quantizers):
                n = int(batched.audio_codes_lengths[i, k])
                alone = single.audio_codes[k][0]
                if alone.shape[-1] != n:  # a length mismatch counts as total disagreement
                    total[k] += max(n, alone.shape[-1])
                    continue
                equal[k] += int((batched.audio_codes[k][i, :n] == alone).sum())
                total[k] += n
        batch_agree = [e / t for e, t in zip(equal, total)]
        row(s5, "batched == alone (valid codes), per layer", fmt_fracs(batch_agree),
            f"clips {', '.join(f'{s:g}' for s in BATCH_SECONDS)} s; expected 1.0")
        row(s5, "batched encode / one-by-one total", f"{batched_s:.2f} / {singles_s:.2f} s")
        figures["batched"] = {
            "clip_seconds": list(BATCH_SECONDS),
            "agreement": batch_agree,
            "batched_s": batched_s,
            "one_by_one_s": singles_s,
        }

        # ------------------------------------------------------------------------------------------ 6. original
        if args.original_repo:
            progress("[6] original implementation: build and load our weights")
            s6 = "6. original MSCodecLM (same weights), timed interleaved with ours"
            setup_s, original = timed(lambda: build_original(args.original_repo, model, workdir))
            converted = converted_from_original(original, config)
            ours_state, conv_state = model.state_dict(), converted.state_dict()
            weight_diff = max(float((ours_state[k] - conv_state[k]).abs().max()) for k in ours_state)
            progress("[6] original implementation: encode / decode")
            with torch.no_grad():
                orig_first, _ = timed(lambda: original.encode(x))
                ours_enc, orig_enc = Timings(), Timings()
                for _ in range(repeats):
                    ours_enc.run(lambda: model.encode(x))
                    orig_codes = orig_enc.run(lambda: original.encode(x))
                conv_codes = converted.encode(x).audio_codes
                torch.manual_seed(DECODE_SEED)
                original.decode(orig_codes)  # warm-up
                ours_dec, orig_dec = Timings(), Timings()
                for _ in range(repeats):
                    torch.manual_seed(DECODE_SEED)
                    orig_audio = orig_dec.run(lambda: original.decode(orig_codes))
                    torch.manual_seed(DECODE_SEED)
                    ours_audio = ours_dec.run(lambda: model.decode(orig_codes).audio_values)
                torch.manual_seed(DECODE_SEED)
                conv_audio = converted.decode(orig_codes).audio_values
            orig_vs_conv = agreement(conv_codes, orig_codes)
            orig_vs_ours = agreement(codes, orig_codes)
            audio_diff = float((conv_audio - orig_audio).abs().max()) if conv_audio.shape == orig_audio.shape else float("inf")
            audio_diff_ours = float((ours_audio - orig_audio).abs().max()) if ours_audio.shape == orig_audio.shape else float("inf")
            row(s6, "original built, our weights loaded", f"{setup_s:.2f} s",
                f"converted back with fold_weight_norm + rename_state_dict: max |w - w'| {weight_diff:.1e}")
            row(s6, "original encode, first call", f"{orig_first:.3f} s")
            row(s6, "original encode (median)", f"{orig_enc.median:.3f} s",
                f"ours {ours_enc.median:.3f} s here: ours {speedup(orig_enc.median, ours_enc.median)} faster; {orig_enc.runs()}")
            row(s6, "original decode (median)", f"{orig_dec.median:.3f} s",
                f"ours {ours_dec.median:.3f} s here: ours {speedup(orig_dec.median, ours_dec.median)} faster; {orig_dec.runs()}")
            row(s6, "codes == original (converted model), per layer", fmt_fracs(orig_vs_conv), "expected 1.0")
            row(s6, "codes == original (benchmark model), per layer", fmt_fracs(orig_vs_ours),
                "weights equal up to weight-norm rounding")
            row(s6, "decoded audio max |ours - original|", f"{audio_diff:.2e}",
                f"converted model, torch.manual_seed({DECODE_SEED}) before each; benchmark model {audio_diff_ours:.2e}")
            figures["original"] = {
                "setup_s": setup_s,
                "converted_weight_max_abs_diff": weight_diff,
                "encode_first_s": orig_first,
                "encode": orig_enc.as_dict(),
                "ours_encode_interleaved": ours_enc.as_dict(),
                "decode": orig_dec.as_dict(),
                "ours_decode_interleaved": ours_dec.as_dict(),
                "agreement_converted": orig_vs_conv,
                "agreement_benchmark_model": orig_vs_ours,
                "decoded_max_abs_diff_converted": audio_diff,
                "decoded_max_abs_diff_benchmark_model": audio_diff_ours,
                "encode_speedup": orig_enc.median / ours_enc.median,
                "decode_speedup": orig_dec.median / ours_dec.median,
            }
            del original, converted
            gc.collect()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------------ table
    order = ["setup"] + sorted(k for k in sections if k != "setup")
    for name in order:
        print(f"{name}")
        for figure, value, note in sections[name]:
            print(f"  {figure:<50} {value:>26}  {note}")
    machine["load_average_end"] = load_average()
    progress("done")

    # ------------------------------------------------------------------------------------------------ targets
    encode_target = TARGETS["encode_steady_s"] * args.seconds / 10.0
    decode_target = TARGETS["decode_s"] * args.seconds / 10.0
    checks = [
        (f"encode {args.seconds:g} s, steady state < {encode_target:g} s", encode_med < encode_target, f"{encode_med:.3f} s"),
        (f"decode {args.seconds:g} s < {decode_target:g} s", decode_med < decode_target, f"{decode_med:.3f} s"),
        (f"peak RSS (a) load + encode + decode < {TARGETS['peak_rss_10s_mb'] / 1000:g} GB",
         mem10["peak_rss_mb"] < TARGETS["peak_rss_10s_mb"], f"{mem10['peak_rss_mb']:.0f} MB"),
        ("codes identical to the reference lookup", all(v == 1.0 for v in ref_agree), fmt_fracs(ref_agree)),
        ("batched codes identical to one-by-one", all(v == 1.0 for v in batch_agree), fmt_fracs(batch_agree)),
    ]
    if orig_vs_conv is not None:
        checks.append(("codes identical to the original MSCodecLM", all(v == 1.0 for v in orig_vs_conv), fmt_fracs(orig_vs_conv)))
        checks.append(("decoded audio agrees with the original (< 1e-3)", audio_diff < 1e-3, f"{audio_diff:.2e}"))
    print("-" * 110)
    print(f"Targets (load average at end {machine['load_average_end']}):")
    for name, ok, value in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name:<58} {value}")
    busy = max(load_samples, default=0.0)
    machine["max_load_average_1min"] = busy
    if busy > cores:
        print(f"  note: the load average reached {busy:.2f} on {cores} cores: other processes shared the CPU, so the wall")
        print("        times above are inflated (compare wall with CPU time, and rerun on an idle machine).")
    failed = [name for name, ok, _ in checks if not ok]
    print("=" * 110)
    print("RESULT:", "PASS" if not failed else f"FAIL ({len(failed)} target(s): {'; '.join(failed)})", flush=True)

    if args.output:
        report = {
            "method": method,
            "machine": machine,
            "figures": figures,
            "table": {name: [{"figure": f, "value": v, "note": n} for f, v, n in sections[name]] for name in order},
            "targets": [{"target": n, "pass": ok, "value": v} for n, ok, v in checks],
            "passed": not failed,
        }
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
