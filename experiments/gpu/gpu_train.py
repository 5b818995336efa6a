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
from gpu_bundle import dequantize_blocks, dequantize_rows  # noqa: E402 - the packing side, beside this script


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
    if resume_from is not None:
        weights.update({k: v.float() for k, v in load_file(str(resume_from / "model.safetensors")).items()})
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


def main(argv=None) -> None:
    from llm_codec.training.config import TrainingConfig
    from llm_codec.training.export import weights_without_codebooks
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
    out.mkdir(parents=True, exist_ok=True)
    manifest = decode_audio(bundle, Path("/tmp/llm_codec_gpu_audio"))
    print(f"audio decoded in {time.time() - started:.0f} s: {sum(1 for _ in open(manifest))} clips", flush=True)

    has_state = (state / "checkpoints" / "latest").is_file()
    resume_from = Path(args.resume_from) if args.resume_from and not has_state else None
    if resume_from is not None and not (resume_from / "model.safetensors").is_file():
        resume_from = None
    codec = rebuild_codec(bundle, resume_from)
    overrides = dict(train_data=str(manifest), val_data=str(bundle / "val.jsonl"), batch_size=args.batch_size,
                     num_workers=args.workers, output_dir=str(state), time_limit_minutes=args.minutes,
                     eval_every=args.eval_every, save_every=args.save_every, log_every=100, progress=False, init_from=None)
    if args.discriminator_start is not None:
        overrides["discriminator_start_step"] = args.discriminator_start
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    config = TrainingConfig.from_file(args.config).replace(**overrides)
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

    weights = weights_without_codebooks(trainer.codec)
    save_file(weights, str(out / "model.safetensors"))
    # half-precision copy small enough to travel back in with the bundle if the next call gets a fresh machine
    (out / "resume").mkdir(exist_ok=True)
    save_file({k: v.half() for k, v in weights.items()}, str(out / "resume" / "model.safetensors"))
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
