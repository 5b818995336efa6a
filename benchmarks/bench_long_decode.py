"""Peak memory of decoding a long code sequence, chunked (the default) against one piece.

    python benchmarks/bench_long_decode.py --minutes 10 [--json benchmarks/results_long_decode.json]

Method: the default codec architecture (hop 480, decoder_dim 256) with random weights and small codebooks (the
decoder does not depend on their size); random codes for `--minutes` of audio; each measurement runs in a fresh
Python process that builds the model, decodes a 1 s warm-up, records ru_maxrss, decodes the long sequence (no
gradient, seeded generator) and reports the growth of ru_maxrss over the warm-up peak, the wall time and the output
size. "one piece" sets the model's `decode_chunk_s` above the sequence length. Both outputs are compared sample by sample.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
sys.path.insert(0, {root!r})
from llm_codec.configuration_llm_codec import LLMCodecConfig
from llm_codec.default_model import DEFAULT_CODEC_ARCH
from llm_codec.modeling_llm_codec import LLMCodecModel

minutes, chunk_s, out = {minutes}, {chunk_s}, {out!r}
torch.manual_seed(0)
config = LLMCodecConfig(codebook_sizes=[3966, 1000, 1000], codebook_dim=64, **DEFAULT_CODEC_ARCH)
model = LLMCodecModel(config).eval()
model.decode_chunk_s = chunk_s
def codes(seconds, seed):
    g = torch.Generator().manual_seed(seed)
    frames = int(seconds * config.frame_rate) // 8 * 8
    return tuple(torch.randint(0, n, (1, frames // s), generator=g) for n, s in zip(config.codebook_sizes, config.vq_strides))
with torch.no_grad():
    model.decode(codes(1.0, 1))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    audio = model.decode(codes(minutes * 60, 2), generator=torch.Generator().manual_seed(3)).audio_values
    seconds = time.perf_counter() - start
grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
torch.save(audio, out)
print(json.dumps(dict(peak_growth_mb=grow, seconds=seconds, output_mb=audio.numel() * 4 / 2**20, samples=audio.shape[-1])))
"""


def measure(minutes: float, chunk_s: float, out: Path) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    code = CHILD.format(root=root, minutes=minutes, chunk_s=chunk_s, out=str(out))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    import tempfile

    import torch

    print(__doc__.split("Method: ")[1].strip(), "\n")
    with tempfile.TemporaryDirectory() as tmp:
        chunked = measure(args.minutes, 30.0, Path(tmp) / "a.pt")
        whole = measure(args.minutes, 1e9, Path(tmp) / "b.pt")
        a, b = torch.load(Path(tmp) / "a.pt", weights_only=True), torch.load(Path(tmp) / "b.pt", weights_only=True)
        difference = float((a - b).abs().max())
    for name, r in (("chunked (30 s)", chunked), ("one piece", whole)):
        print(f"{name:>15}: {args.minutes:g} min -> peak RSS +{r['peak_growth_mb']:.0f} MB "
              f"(output {r['output_mb']:.0f} MB), {r['seconds']:.1f} s")
    print(f"max |chunked - one piece| = {difference:.2e}")
    if args.output:
        Path(args.output).write_text(json.dumps(dict(minutes=args.minutes, chunked=chunked, one_piece=whole,
                                                   max_abs_difference=difference), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
