"""Memory, time and mel distance of `refine_codes` on a long clip, window by window (the default) against one piece.

    python benchmarks/bench_refine_memory.py [--audio CLIP] [--seconds 40] [--steps 50] [--chunks 10 none]
        [--threads 2] [--json benchmarks/results_refine_memory.json]

Method: the shipped default codec (`load_default_codec`); the clip given by `--audio` (default: the bundled
`example_speech.flac` repeated to `--seconds`), read with `llm_codec.audio_io.load_audio` (soundfile, soxr to
16 kHz) and averaged to mono.
Each measurement runs in a fresh Python process with `--threads` torch threads that loads the codec, encodes and
decodes a 1 s warm-up, records ru_maxrss, refines the whole clip (`refine_codes(steps=--steps, chunk_s=...)`, seed
0), decodes the refined codes (decoder noise seeded 0), and reports the growth of ru_maxrss over the warm-up peak,
the refinement's wall time, and the multi-scale mel distance (the refinement's objective) of the decoded audio to
the input, next to that of the encoder's own codes. Run on an otherwise idle machine for comparable times.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
sys.path.insert(0, {root!r})
from llm_codec import refine_codes
from llm_codec.audio_io import load_audio
from llm_codec.default_model import load_default_codec
from llm_codec.mel import MultiScaleMelLoss

torch.set_num_threads({threads})
audio = load_audio({audio!r}, 16000)[0].mean(0)
if {seconds} is not None:
    audio = np.tile(audio, int(np.ceil({seconds} * 16000 / len(audio))))[: int({seconds} * 16000)]
audio = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, None]
codec, _, _ = load_default_codec()
mel = MultiScaleMelLoss(16000)

def distance(codes):
    with torch.no_grad():
        decoded = codec.decode(codes, generator=torch.Generator().manual_seed(0)).audio_values[..., : audio.shape[-1]]
        return float(mel(decoded, audio))

with torch.no_grad():
    codec.decode(codec.encode(audio[..., :16000]).audio_codes)
    plain = distance(codec.encode(audio).audio_codes)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
refined = refine_codes(codec, audio, steps={steps}, chunk_s={chunk_s})
seconds = time.perf_counter() - start
grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(dict(peak_growth_mb=grow, refine_seconds=seconds, audio_seconds=audio.shape[-1] / 16000,
                      mel_distance_refined=distance(refined.audio_codes), mel_distance_encoder=plain)))
"""


def measure(audio: str, seconds, steps: int, chunk_s, threads: int) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    code = CHILD.format(root=root, audio=audio, seconds=seconds, steps=steps, chunk_s=chunk_s, threads=threads)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"the measurement process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", default=None, help="a clip (default: the bundled speech, repeated to --seconds)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="repeat/cut the clip to this length (default: 40 for the bundled clip, else as is)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--chunks", nargs="+", default=["10", "none"],
                        help="`chunk_s` values to measure, `none` for one piece (default: 10 none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    audio = args.audio
    seconds = args.seconds
    if audio is None:
        audio = str(Path(__file__).resolve().parents[1] / "llm_codec" / "assets" / "example_speech.flac")
        seconds = 40.0 if seconds is None else seconds
    chunks = [None if c.lower() == "none" else float(c) for c in args.chunks]

    print(__doc__.split("Method: ")[1].strip(), "\n")
    rows = []
    for chunk_s in chunks:
        r = measure(audio, seconds, args.steps, chunk_s, args.threads)
        r["chunk_s"] = chunk_s
        rows.append(r)
        name = "one piece" if chunk_s is None else f"{chunk_s:g} s windows"
        print(f"{name:>15}: {r['audio_seconds']:.1f} s of audio, {args.steps} steps -> peak RSS "
              f"+{r['peak_growth_mb']:.0f} MB, {r['refine_seconds']:.0f} s, mel distance "
              f"{r['mel_distance_encoder']:.3f} (encoder) -> {r['mel_distance_refined']:.3f} (refined)", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(dict(audio=args.audio or "example_speech.flac (repeated)",
                                                   steps=args.steps, threads=args.threads, runs=rows), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
