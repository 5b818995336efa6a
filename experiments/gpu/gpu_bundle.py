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
  val/ + val.jsonl        the validation clips of the config (its first `num_val_clips`, the first `val_seconds` of
                          each: what the trainer's evaluation reads), lossless
  wheels/                 soundfile, soxr, pystoi, cffi, pycparser (downloaded with pip for CPython 3.12)
  semantic.safetensors    only with `--semantic-from FOLDER` (a saved codec whose layer 1 is teacher-computed, e.g.
                          runs/design2_layer1 of experiments/semantic_layer1/build_design2_codec.py): the frozen
                          Resemblyzer voice encoder (from the installed, sha256-pinned wheel, float16 by default:
                          2.7 MiB), the folder's fitted `semantic.centroids` (float32) and `semantic.word_codes`
                          (int64), its codec config, and the layer-1 codes the folder's teacher gives each bundled
                          validation clip here (gpu_train.py checks its rebuilt codec against them); for a config
                          with `semantic_groups` (grouped words, experiments/semantic_layer1/grouped_gpu.yaml) also
                          `word_heads` (int64, the value of `quantizer.layers.0.word_heads`): the folder's own when
                          it is a grouped codec, else `training.group_layer1_words` on the config's starting codec
                          (the shipped one) with the bundled words and the config's seed, exactly the groups the
                          trainer's `fit_semantic_layer1` fits for that config on the CPU

Usage:
    python experiments/gpu/gpu_bundle.py --out .gpu_bundle --speech-minutes 84 --music-minutes 25
    python experiments/gpu/gpu_bundle.py --config experiments/semantic_layer1/design2_gpu.yaml \
        --semantic-from runs/design2_layer1 --speech-minutes 52 --out .gpu_bundle   # design 2 (see that config)
    python experiments/gpu/gpu_bundle.py --config experiments/semantic_layer1/grouped_gpu.yaml \
        --semantic-from runs/design2_layer1 --speech-minutes 52 --out .gpu_bundle   # grouped words (see that config)

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
SEMANTIC_FILE = "semantic.safetensors"
TEACHER_PREFIX = "voice_encoder."  # the teacher's tensors in SEMANTIC_FILE; the codec's are semantic.voice_encoder.*
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


def pack_codec(config, out: Path):
    """codec_init/ and the codebooks of the codec `config` builds, without a teacher-computed layer 1 (a design-2
    config's layer 1 travels in SEMANTIC_FILE and gpu_train.py adds it). Returns that codec (float32)."""
    from llm_codec.training.build import build_codec

    torch.manual_seed(config.seed)
    codec = build_codec(config.from_dict({**config.to_dict(), "semantic_teacher": None}))  # replace() skips None
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
    return codec


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


def pack_val(val_manifest: Path, out: Path, count: int | None = None, seconds: float | None = None) -> None:
    """The first `count` clips of `val_manifest` (all: `None`), each cut to its first `seconds` (the trainer's
    `num_val_clips` and `val_seconds`: its evaluation reads no more), as 16 kHz FLAC."""
    import soundfile as sf

    (out / "val").mkdir()
    lines = []
    rows = [l for l in val_manifest.read_text().splitlines() if l.strip()][:count]
    for i, line in enumerate(rows):
        row = json.loads(line)
        audio = _load_16k(str(val_manifest.parent / row["path"]))
        if seconds is not None:
            audio = audio[: round(seconds * 16000)]
        sf.write(str(out / "val" / f"{i}.flac"), audio, 16000)
        lines.append(json.dumps({"path": f"val/{i}.flac", "source": row["path"]}))
    (out / "val.jsonl").write_text("\n".join(lines) + "\n")


def codec_fields(config) -> dict:
    """The codec's own hyper-parameters of an `LLMCodecConfig` (not transformers' generic ones, which vary with its
    version), as JSON-ready values: two codecs with equal fields are built alike."""
    from llm_codec.configuration_llm_codec import LLMCodecConfig

    return json.loads(json.dumps({name: getattr(config, name) for name in LLMCodecConfig.__annotations__
                                  if not name.startswith("_") and name != "attribute_map"}))


def read_semantic_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The `semantic.*` tensors of a `save_pretrained` folder (one `model.safetensors` or an indexed set of shards)."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({name for key, name in weight_map.items() if key.startswith("semantic.")})
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        with safe_open(str(folder / name), "pt") as handle:
            tensors.update({k: handle.get_tensor(k) for k in handle.keys() if k.startswith("semantic.")})
    return tensors


def read_word_heads(folder: Path) -> torch.Tensor | None:
    """`quantizer.layers.0.word_heads` of a `save_pretrained` folder (a codec with `semantic_groups`), or `None`."""
    from safetensors import safe_open

    key = "quantizer.layers.0.word_heads"
    index = folder / "model.safetensors.index.json"
    name = json.loads(index.read_text())["weight_map"].get(key) if index.is_file() else "model.safetensors"
    if name is None:
        return None
    with safe_open(str(folder / name), "pt") as handle:
        return handle.get_tensor(key) if key in handle.keys() else None


def layer1_word_heads(folder: Path, word_codes: torch.Tensor, group_codec=None, seed: int = 0) -> tuple[torch.Tensor, str]:
    """
    The layer-1 word groups a grouped run with the words `word_codes` of `folder` uses: `(word_heads, how)`. The
    folder's own `quantizer.layers.0.word_heads` when its codec is grouped (they must be fitted and headed by its
    words), else `group_layer1_words(group_codec, word_codes, seed)`: what `fit_semantic_layer1` computes for those
    words when the trainer fits `group_codec` (the config's starting codec) with the config's seed.
    """
    from llm_codec.configuration_llm_codec import LLMCodecConfig
    from llm_codec.training.semantic_layer1 import group_layer1_words, groups_headed_by

    if LLMCodecConfig.from_pretrained(str(folder)).semantic_groups:
        heads = read_word_heads(folder)
        if heads is None or bool((heads < 0).any()):
            raise SystemExit(f"--semantic-from {folder}: its layer-1 word groups were never fitted (word_heads -1)")
        how = f"the word_heads of {folder}"
    else:
        if group_codec is None:
            raise SystemExit(f"--semantic-from {folder} is not grouped: its groups need the config's starting codec")
        heads = group_layer1_words(group_codec, word_codes.tolist(), seed=seed)
        how = f"group_layer1_words on the config's starting codec, seed {seed}"
    heads = heads.long().contiguous()
    if not groups_headed_by(heads, word_codes):
        raise SystemExit(f"--semantic-from {folder}: the layer-1 groups are not headed by its words")
    return heads, how


def pack_semantic(folder: Path, out: Path, dtype: str = "float16", teacher_state: dict | None = None,
                  groups: bool = False, group_codec=None, seed: int = 0) -> dict:
    """
    Writes SEMANTIC_FILE: what a run of the codec saved in `folder` (layer 1 computed by a frozen teacher, centroids
    fitted) needs and a bare GPU machine cannot get. The teacher's weights come from `teacher_state` (default: the
    installed Resemblyzer wheel, sha256-checked) and must equal the folder's; they are stored in `dtype`, the
    centroids in float32 and the word codes in int64 (exactly the folder's). With `groups` (a config with
    `semantic_groups`), or when the folder's codec is grouped, also `word_heads` (`layer1_word_heads(folder,
    word_codes, group_codec, seed)`). Returns the file's metadata.
    """
    from llm_codec.configuration_llm_codec import LLMCodecConfig

    config = LLMCodecConfig.from_pretrained(str(folder))
    if not config.semantic_teacher:
        raise SystemExit(f"--semantic-from {folder}: its codec has no teacher-computed layer 1 (semantic_teacher)")
    state = read_semantic_tensors(folder)
    centroids, word_codes = state["semantic.centroids"].float(), state["semantic.word_codes"]
    if not centroids.abs().sum() > 0:
        raise SystemExit(f"--semantic-from {folder}: its centroids were never fitted (all zero)")
    if teacher_state is None:
        from llm_codec.voice_encoder import RESEMBLYZER_SHA256, load_resemblyzer_state_dict

        teacher_state, provenance = load_resemblyzer_state_dict(), f"Resemblyzer 0.1.4 wheel, sha256 {RESEMBLYZER_SHA256}"
    else:
        provenance = "given"
    saved = {k[len("semantic." + TEACHER_PREFIX):]: v for k, v in state.items()
             if k.startswith("semantic." + TEACHER_PREFIX)}
    if set(saved) != set(teacher_state) or any(not torch.equal(saved[k], v.to(saved[k].dtype))
                                               for k, v in teacher_state.items()):
        raise SystemExit(f"--semantic-from {folder}: its voice encoder is not the installed teacher's")
    packed = {TEACHER_PREFIX + k: v.to(getattr(torch, dtype)).contiguous() for k, v in teacher_state.items()}
    error = max(((packed[TEACHER_PREFIX + k].float() - v.float()).abs() / v.float().abs().clamp_min(1e-4)).max().item()
                for k, v in teacher_state.items())  # relative, ignoring weights under 1e-4
    packed["centroids"], packed["word_codes"] = centroids.contiguous(), word_codes.long().contiguous()
    words = config.layer1_words or [str(i) for i in range(config.codebook_sizes[0])]
    metadata = {"teacher": config.semantic_teacher, "clusters": str(config.semantic_clusters),
                "teacher_dtype": dtype, "teacher_source": provenance, "source": str(folder),
                "words": json.dumps([words[i] for i in word_codes.tolist()]),
                "config": json.dumps(codec_fields(config))}
    if groups or config.semantic_groups:
        packed["word_heads"], metadata["word_heads_source"] = layer1_word_heads(folder, packed["word_codes"],
                                                                                group_codec, seed)
        sizes = [int((packed["word_heads"] == w).sum()) for w in packed["word_codes"].tolist()]
        print(f"{SEMANTIC_FILE}: layer-1 word groups from {metadata['word_heads_source']}, sizes {sizes}")
    save_file(packed, str(out / SEMANTIC_FILE), metadata=metadata)
    print(f"{SEMANTIC_FILE}: teacher of {folder} in {dtype} (max relative round-trip error {error:.2g}), "
          f"{len(centroids)} centroids, words {json.loads(metadata['words'])}")
    return metadata


@torch.no_grad()
def layer1_codes(codec, audio: np.ndarray) -> list[int]:
    """The layer-1 codes `codec` gives one clip (16 kHz samples), encoded alone."""
    values = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, None].to(codec.device, codec.dtype)
    return codec.encode(values).audio_codes[0][0].tolist()


@torch.no_grad()
def teacher_codes(codec, audio: np.ndarray) -> list[int]:
    """The teacher-computed layer-1 codes (`semantic_codes`) of a codec with `semantic_teacher` for one clip (16 kHz
    samples) alone: its layer-1 codes for design 2, the group heads for grouped words (whose layer-1 codes are words
    of those groups, chosen by the encoder's latent)."""
    values = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, None].to(codec.device, codec.dtype)
    return codec.semantic_codes(values)[0].tolist()


def pack_semantic_check(folder: Path, out: Path) -> None:
    """Adds to SEMANTIC_FILE's metadata the teacher-computed layer-1 codes (`teacher_codes`) the codec saved in
    `folder` gives each bundled validation clip (as read back from the bundle): gpu_train.py compares its rebuilt
    codec's with them."""
    import soundfile as sf
    from safetensors import safe_open

    from llm_codec.modeling_llm_codec import LLMCodecModel

    codec = LLMCodecModel.from_pretrained(str(folder)).float().eval()
    rows = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines() if line.strip()]
    codes = {r["path"]: teacher_codes(codec, sf.read(str(out / r["path"]), dtype="float32")[0]) for r in rows}
    with safe_open(str(out / SEMANTIC_FILE), "pt") as handle:
        metadata, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(out / SEMANTIC_FILE), metadata={**metadata, "check_codes": json.dumps(codes)})
    print(f"layer-1 codes of {len(codes)} validation clips ({sum(map(len, codes.values()))} positions) recorded")


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
    parser.add_argument("--semantic-from", default=None,
                        help="a saved codec whose layer 1 is teacher-computed (e.g. runs/design2_layer1): bundle its "
                             "teacher, fitted centroids and words for a run of experiments/semantic_layer1/"
                             "design2_gpu.yaml (design 2) or grouped_gpu.yaml (grouped words: the groups are "
                             "computed here, or taken from a grouped FOLDER)")
    parser.add_argument("--teacher-dtype", choices=["float16", "float32"], default="float16",
                        help="how the teacher's weights travel (float16: 2.7 MiB; float32: 5.4 MiB, bit-exact)")
    args = parser.parse_args(argv)
    exclude: frozenset[str] = frozenset()
    if args.exclude != "none":
        if not Path(args.exclude).exists():
            raise SystemExit(f"--exclude {args.exclude}: no such manifest (run scripts/make_dev_split.py, or pass "
                             "--exclude none to train on the development clips too)")
        exclude = frozenset(str(Path(p).resolve()) for p in read_manifest(args.exclude))
    config = TrainingConfig.from_file(args.config)
    if config.semantic_teacher and not args.semantic_from:
        raise SystemExit(f"{args.config} computes layer 1 with a teacher: pass --semantic-from FOLDER (the codec "
                         "whose fitted centroids the run must use, e.g. runs/design2_layer1)")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    start = pack_codec(config, out)
    if args.semantic_from:  # before the audio: a folder that cannot be packed fails early
        pack_semantic(Path(args.semantic_from), out, args.teacher_dtype, groups=bool(config.semantic_groups),
                      group_codec=start, seed=config.seed)
    del start
    pack_teacher(out)
    pack_audio(ROOT / config.train_data, out, args.speech_minutes, args.music_minutes, args.seed, exclude)
    pack_val(ROOT / config.val_data, out, config.num_val_clips, config.val_seconds)
    if args.semantic_from:
        pack_semantic_check(Path(args.semantic_from), out)
    (out / "wheels").mkdir()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "any",
                    "-d", str(out / "wheels"), *WHEELS], check=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"bundle: {size / 2**20:.1f} MiB in {out}")


if __name__ == "__main__":
    main()
