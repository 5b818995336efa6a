"""
Packs what a bare GPU machine needs to train the default codec into one folder small enough to travel (< 64 MiB).

The GPU machine has PyTorch, transformers and accelerate but no SmolLM2 weights, no Whisper package, no Debian audio
and no network, so this script (run here, where `bash scripts/prepare_data.sh` has built `data/`) writes:

  codec_init/   config.json of the codec `build_codec` makes from the training config (the GPU side initialises
                its weights from a seed)
  codebooks.safetensors   every distinct frozen codebook as int8 per 32-value block + fp16 block scales (SmolLM2's
                          GGUF stores its embeddings as 8-bit blocks; the script reports the round-trip error)
  teacher.safetensors     the Whisper tiny.en encoder (int8 per output row for matrices, fp16 for the rest)
  audio/*.opus + audio_index.json   a seeded subset of data/codec_train.jsonl at 16 kHz, one Ogg Opus file per
                          source (about 19 kbit/s, PESQ-WB 3.9 against the FLAC), with each clip's sample count;
                          never the development clips of data/dev_speech.jsonl (`--exclude`)
  val/ + val.jsonl        the held-out validation clips of the config, lossless
  wheels/                 soundfile, soxr, pystoi, cffi, pycparser (downloaded with pip for CPython 3.12)

Usage:
    python experiments/gpu/gpu_bundle.py --out .gpu_bundle --speech-minutes 84 --music-minutes 25

`experiments/gpu/gpu_train.py` is its counterpart on the GPU machine (see docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BLOCK = 32
WHEELS = ["soundfile==0.14.0", "soxr==1.1.0", "pystoi==0.4.1", "cffi", "pycparser"]


def quantize_blocks(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`table` (rows, dim) with dim % 32 == 0 -> int8 values (rows, dim) and fp16 scales (rows, dim // 32)."""
    rows, dim = table.shape
    blocks = table.float().reshape(rows, dim // BLOCK, BLOCK)
    scale = (blocks.abs().amax(-1) / 127).half()
    safe = scale.float().clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(blocks / safe[..., None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(rows, dim), scale


def dequantize_blocks(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    rows, dim = q.shape
    return (q.float().reshape(rows, dim // BLOCK, BLOCK) * scale.float()[..., None]).reshape(rows, dim)


def quantize_rows(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight of 2+ dims -> int8 values of its shape and one float32 scale per output row (dim 0)."""
    flat = value.float().reshape(value.shape[0], -1)
    scale = flat.abs().amax(1).clamp_min(1e-12) / 127
    return torch.round(flat / scale[:, None]).to(torch.int8).reshape(value.shape), scale.float()


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (q.float().reshape(q.shape[0], -1) * scale[:, None]).reshape(q.shape)


def pack_codec(config, out: Path) -> None:
    from llm_codec.training.build import build_codec

    torch.manual_seed(config.seed)
    codec = build_codec(config)
    (out / "codec_init").mkdir(parents=True)
    codec.config.save_pretrained(str(out / "codec_init"))
    state = codec.state_dict()
    tables, names, packed = [], {}, {}
    for key in (k for k in state if k.endswith(".codebook")):
        for index, table in enumerate(tables):
            if table.shape == state[key].shape and torch.equal(table, state[key]):
                names[key] = f"table{index}"
                break
        else:
            tables.append(state[key])
            names[key] = f"table{len(tables) - 1}"
            q, scale = quantize_blocks(state[key])
            error = (dequantize_blocks(q, scale) - state[key].float()).abs().max().item()
            print(f"{key}: {tuple(state[key].shape)} -> {names[key]}, int8 round trip max error {error:.3g}")
            packed[f"{names[key]}.q"], packed[f"{names[key]}.scale"] = q, scale
    save_file(packed, str(out / "codebooks.safetensors"), metadata={"names": json.dumps(names)})


def pack_teacher(out: Path) -> None:
    from llm_codec.training.teachers import WhisperTeacher

    encoder = WhisperTeacher.from_pretrained().encoder
    packed, meta = {}, {"n_mels": encoder.n_mels, "width": encoder.width, "heads": encoder.heads,
                        "layers": len(encoder.layers)}
    for key, value in encoder.state_dict().items():
        if key == "positions":
            continue  # rebuilt by the constructor
        if value.dim() >= 2:
            packed[f"{key}.q"], packed[f"{key}.scale"] = quantize_rows(value)
        else:
            packed[key] = value.half()
    save_file(packed, str(out / "teacher.safetensors"), metadata={"config": json.dumps(meta)})


def _load_16k(path: str) -> np.ndarray:
    from llm_codec.audio_io import read_audio

    return read_audio(path, 16000)


def _encode_group(args) -> tuple[str, list[str], list[int]]:
    import soundfile as sf

    name, paths, out = args
    clips = [_load_16k(p) for p in paths]
    lengths = [len(c) for c in clips]
    sf.write(str(Path(out) / "audio" / f"{name}.opus"), np.concatenate(clips), 16000, format="OGG", subtype="OPUS",
             compression_level=0.95)
    return name, paths, lengths


def choose_clips(rows: list[dict], speech_minutes: float, music_minutes: float, seed: int,
                 exclude: frozenset[str] = frozenset()) -> dict[str, list[dict]]:
    """
    A seeded subset of manifest rows, per source: about `speech_minutes` of speech and `music_minutes` of the rest,
    the same fraction of every source (so every speaker and instrument stays in); rows whose `path` is in `exclude`
    (the development clips) are never chosen.
    """
    rows = [r for r in rows if r["path"] not in exclude]
    rng = random.Random(seed)
    rng.shuffle(rows)
    budget = {"speech": speech_minutes * 60, "other": music_minutes * 60}
    by_source: dict[str, list[dict]] = defaultdict(list)
    total = {k: sum(r["duration"] for r in rows if (r["kind"] == "speech") == (k == "speech")) for k in budget}
    for row in rows:
        kind = "speech" if row["kind"] == "speech" else "other"
        if total[kind] and rng.random() < budget[kind] / total[kind]:
            by_source[row["source"]].append(row)
    return dict(by_source)


def pack_audio(manifest: Path, out: Path, speech_minutes: float, music_minutes: float, seed: int,
               exclude: frozenset[str] = frozenset()) -> None:
    """Packs `choose_clips` of `manifest`; `exclude` holds resolved absolute paths of clips never to pack."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    left_out = frozenset(r["path"] for r in rows if str((manifest.parent / r["path"]).resolve()) in exclude)
    by_source = choose_clips(rows, speech_minutes, music_minutes, seed, left_out)
    print(f"{len(left_out)} clips of {manifest.name} left out as development clips")
    (out / "audio").mkdir(parents=True)
    jobs = []
    for source, chosen in sorted(by_source.items()):
        paths = [str(manifest.parent / r["path"]) for r in chosen]
        for part in range(0, len(paths), 400):
            jobs.append((f"{source}-{part // 400:02d}", paths[part : part + 400], str(out)))
    index = []
    with ProcessPoolExecutor(2) as pool:
        for name, paths, lengths in pool.map(_encode_group, jobs):
            index.append({"file": f"audio/{name}.opus", "sources": [str(Path(p).relative_to(manifest.parent))
                                                                    for p in paths], "lengths": lengths})
            print(f"{name}: {len(paths)} clips, {sum(lengths) / 16000 / 60:.1f} min")
    (out / "audio_index.json").write_text(json.dumps(index))
    minutes = sum(sum(e["lengths"]) for e in index) / 16000 / 60
    print(f"audio: {minutes:.1f} min in {len(index)} files")


def pack_val(val_manifest: Path, out: Path) -> None:
    import soundfile as sf

    (out / "val").mkdir()
    lines = []
    for i, line in enumerate(l for l in val_manifest.read_text().splitlines() if l.strip()):
        row = json.loads(line)
        sf.write(str(out / "val" / f"{i}.flac"), _load_16k(str(val_manifest.parent / row["path"])), 16000)
        lines.append(json.dumps({"path": f"val/{i}.flac", "source": row["path"]}))
    (out / "val.jsonl").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    from llm_codec.training.config import TrainingConfig
    from llm_codec.training.data import read_manifest

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "llm_codec/training/configs/default_smollm2.yaml"))
    parser.add_argument("--out", default=str(ROOT / ".gpu_bundle"))
    parser.add_argument("--speech-minutes", type=float, default=84)
    parser.add_argument("--music-minutes", type=float, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exclude", default=str(ROOT / "data/dev_speech.jsonl"),
                        help="manifest of clips never to pack (default: the development split of "
                             "scripts/make_dev_split.py; 'none' packs from the whole training manifest)")
    args = parser.parse_args(argv)
    exclude: frozenset[str] = frozenset()
    if args.exclude != "none":
        if not Path(args.exclude).exists():
            raise SystemExit(f"--exclude {args.exclude}: no such manifest (run scripts/make_dev_split.py, or pass "
                             "--exclude none to train on the development clips too)")
        exclude = frozenset(str(Path(p).resolve()) for p in read_manifest(args.exclude))
    config = TrainingConfig.from_file(args.config)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pack_codec(config, out)
    pack_teacher(out)
    pack_audio(ROOT / config.train_data, out, args.speech_minutes, args.music_minutes, args.seed, exclude)
    pack_val(ROOT / config.val_data, out)
    (out / "wheels").mkdir()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "any",
                    "-d", str(out / "wheels"), *WHEELS], check=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"bundle: {size / 2**20:.1f} MiB in {out}")


if __name__ == "__main__":
    main()
