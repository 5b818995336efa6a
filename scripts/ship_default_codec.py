"""
Ships a training checkpoint of the default codec as `llm_codec/assets/default_codec/weights_without_codebooks.safetensors`
(weight norm folded, float32, the frozen codebooks left out: `load_default_codec()` rebuilds them from SmolLM2).

    python scripts/ship_default_codec.py runs/default_decoder_gan/checkpoints/step_00001500
    python scripts/ship_default_codec.py gpu_out/model.safetensors --evaluation-folder /tmp/candidate

The source is either a `Trainer` checkpoint folder (accelerate state) of a run that started from the default
codec's architecture and LM, e.g. `experiments/default_codec/configs/default_smollm2_decoder_gan.yaml`, or a weights file
as `experiments/gpu/gpu_train.py` returns it (weight norm folded, no codebooks). The codes of `trainable: decoder` runs are
unchanged; the script checks that the encoder and quantizer weights it ships equal the current ones unless
`--allow-encoder-change` is given. `--evaluation-folder DIR` writes a complete codec folder (codebooks included) to
compare a candidate with `llm-codec evaluate codec --model DIR` instead of shipping it (any candidate).
`--resume-pack DIR --step N` also writes what `experiments/gpu/gpu_train.py --resume-from DIR` continues from: the shipped
weights in half precision, `progress.json` and, with `--discriminator FILE`, that discriminator (else the pack's
current one stays):

    python scripts/ship_default_codec.py b/model.safetensors --allow-encoder-change \
        --resume-pack experiments/default_codec/training/resume --step 23529 --training-config CONFIG.yaml
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llm_codec.default_model import WEIGHTS_NAME, default_codec_dir, load_default_codec
from llm_codec.training.export import export_codec, weights_without_codebooks


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoints/step_XXXXXXXX folder or a gpu_train.py model.safetensors")
    parser.add_argument("--output", default=str(default_codec_dir() / WEIGHTS_NAME),
                        help="where to write the weights (default: the package's shipped file)")
    parser.add_argument("--allow-encoder-change", action="store_true",
                        help="ship even if encoder/quantizer weights differ (the codes of clips then change)")
    parser.add_argument("--evaluation-folder", default=None,
                        help="write a complete codec folder here for `llm-codec evaluate codec --model`, do not ship")
    parser.add_argument("--resume-pack", default=None, help="also write a resume pack for experiments/gpu/gpu_train.py here")
    parser.add_argument("--step", type=int, default=None, help="training step of the checkpoint (with --resume-pack)")
    parser.add_argument("--training-config", default=None, help="config the checkpoint was trained with (recorded)")
    parser.add_argument("--discriminator", default=None, help="discriminator weights to put in the resume pack")
    args = parser.parse_args(argv)
    if args.resume_pack and args.step is None:
        parser.error("--resume-pack needs --step (the step the checkpoint was trained to)")
    if args.resume_pack and args.evaluation_folder:
        parser.error("--resume-pack goes with shipping, --evaluation-folder does not ship: use one of them")

    folder = Path(args.checkpoint)
    codec, trained, _ = load_default_codec()
    current = {k: v.clone() for k, v in codec.state_dict().items() if not k.endswith(".codebook")}
    codec.float()
    if folder.is_file():  # folded weights without codebooks (experiments/gpu/gpu_train.py)
        codec_state = {k: v.float() for k, v in load_file(str(folder)).items()}
    else:  # the generator module of a Trainer checkpoint: codec.* (weight norm applied) plus loss heads
        codec.apply_weight_norm()
        state = load_file(str(folder / "model.safetensors"))
        codec_state = {k[len("codec."):]: v for k, v in state.items() if k.startswith("codec.")}
    missing, unexpected = codec.load_state_dict(codec_state, strict=False)
    missing = [k for k in missing if not k.endswith(".codebook")]
    if missing or unexpected:
        raise SystemExit(f"{folder} does not fit the default codec: missing {missing[:5]}, unexpected {unexpected[:5]}")
    weights = weights_without_codebooks(codec)
    changed = sorted(k for k in weights if not torch.allclose(weights[k], current[k].float(), atol=1e-6, rtol=1e-5))
    frozen_changed = [k for k in changed if not k.startswith("decoder.")]
    if args.evaluation_folder:
        export_codec(codec, args.evaluation_folder)  # weight norm folded, codebooks kept
        print(f"{args.evaluation_folder}: complete codec folder; {len(changed)} tensors differ from the shipped codec "
              f"({len(frozen_changed)} outside the decoder)")
        return
    if frozen_changed and not args.allow_encoder_change:
        raise SystemExit(f"encoder/quantizer weights differ ({frozen_changed[:3]} ...): the codes would change; "
                         "pass --allow-encoder-change to ship anyway")
    target = Path(args.output)
    save_file(weights, str(target), metadata={"source": folder.name if folder.is_dir() else f"{folder.parent.name}/{folder.name}"})
    print(f"{target}: {len(weights)} tensors, {target.stat().st_size / 2**20:.1f} MiB; "
          f"{len(changed)} changed ({len(frozen_changed)} outside the decoder); was trained: {trained}")
    if args.resume_pack:
        write_resume_pack(Path(args.resume_pack), weights, args.step, args.training_config, args.discriminator)


def write_resume_pack(pack: Path, weights: dict, step: int, config: str | None, discriminator: str | None) -> None:
    """Writes `pack/model.safetensors` (`weights` in half precision), `pack/progress.json` and, if given, copies
    `discriminator` to `pack/discriminator.safetensors` (an existing one stays otherwise)."""
    pack.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in weights.items()}, str(pack / "model.safetensors"))
    if discriminator is not None:
        shutil.copyfile(discriminator, pack / "discriminator.safetensors")
        about_discriminator = f"from {discriminator}"
    else:  # keep what the pack said about the discriminator it already holds
        earlier = json.loads((pack / "progress.json").read_text()) if (pack / "progress.json").is_file() else {}
        about_discriminator = earlier.get("discriminator") or earlier.get("note") or "none given"
    progress = {"step": step, "config": config, "discriminator": about_discriminator}
    (pack / "progress.json").write_text(json.dumps(progress))
    print(f"{pack}: resume pack at step {step}")


if __name__ == "__main__":
    main()
