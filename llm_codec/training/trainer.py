"""The training loop of LLM-Codec (generator = `LLMCodecModel`, adversarial discriminators, auxiliary teachers).

One step: the codec reconstructs a batch of crops; the discriminators are updated on real vs. (detached) generated
audio (least squares); the codec and the learned heads of the auxiliary losses are updated with
`mel * L_mel + stft * L_stft + adversarial * L_adv + feature_matching * L_fm + commitment * L_commit + codebook *
L_codebook + consistency * L_consistency + semantic * L_semantic`. The codebooks are buffers (frozen LLM tables)
and never enter an optimizer.

Runs under `accelerate` (`accelerate launch -m llm_codec.training ...` for several GPUs). Layout of `output_dir`:

    training_config.yaml           the config of the run
    log.jsonl                      one JSON object per logging / evaluation event
    checkpoints/step_XXXXXXXX/     accelerate state (models, optimizers, RNG) + schedulers + trainer_state.json
    checkpoints/latest             name of the newest checkpoint folder
    eval/step_XXXXXXXX/            metrics.json, spectrogram.png, reconstruction.wav (original.wav once)
    model/                         `save_pretrained` of the codec (weight norm folded), refreshed at every checkpoint
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..modeling_llm_codec import LLMCodecModel
from .config import TrainingConfig
from .data import AudioCropDataset, load_validation_clips, make_dataloader, resolve_sources, split_holdout
from .discriminators import CodecDiscriminator
from .losses import (
    MultiScaleMelLoss,
    MultiScaleSTFTLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from .teachers import TeacherUnavailable, consistency_loss, distillation_loss, load_teacher, semantic_loss

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "trainer_state.json"


# ----------------------------------------------------------------------------------------------------- the codec


def load_word_list(word_list):
    """`None` -> `None` (shipped list); 10/20 -> that SCOWL size of the shipped list; a path -> its lines; a list."""
    if word_list is None:
        return None
    if isinstance(word_list, int):
        from ..codebooks import load_default_word_list

        return load_default_word_list(word_list)
    if isinstance(word_list, str):
        path = Path(word_list)
        if not path.is_file():
            raise FileNotFoundError(f"`word_list`: no file at {path}.")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(w) for w in word_list]


def build_codec(config: TrainingConfig, lm=None, tokenizer=None) -> LLMCodecModel:
    """
    The codec to train: the shipped default codec (`init_from: default`), `LLMCodecModel.from_pretrained(init_from)`,
    or a new codec whose codebooks come from
    the LM (`lm` object if given, else `config.lm`: "default" or a local folder) with `config.codec` as the
    architecture. Returns it in float32, without weight norm.
    """
    if config.init_from == "default":
        from ..default_model import load_default_codec

        codec, trained, _ = load_default_codec(lm, tokenizer)
        if not trained:
            raise FileNotFoundError("`init_from: default`: this installation ships no trained default codec.")
        return codec.float()
    if config.init_from:
        return LLMCodecModel.from_pretrained(config.init_from)
    source = lm if lm is not None else (None if config.lm in (None, "default") else config.lm)
    return LLMCodecModel.from_language_model(
        source,
        tokenizer=tokenizer,
        word_list=load_word_list(config.word_list),
        max_subwords=config.max_subwords,
        layer_subset=config.layer_subset,
        **config.codec,
    )


def has_weight_norm(codec: nn.Module) -> bool:
    """Whether some convolution of `codec` is already weight-normalised (e.g. by an earlier `Trainer`)."""
    from torch.nn.utils import parametrize

    return any(
        parametrize.is_parametrized(m, "weight") for m in codec.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (frozen codebooks are buffers and do not count)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def folded_codec(codec: LLMCodecModel) -> LLMCodecModel:
    """
    A new float32 codec in eval mode holding `codec`'s weights with weight norm folded in; `codec` is untouched.

    (Not `copy.deepcopy` + `remove_weight_norm()`: removing a parametrization deletes the property from the
    dynamically created module class, which a deep copy shares with the original.) Torch's global RNG is left as it
    was (the new model's random initialisation runs in a forked RNG), so exporting does not change training.
    """
    from torch.nn.utils import parametrize

    state = {k: v for k, v in codec.state_dict().items() if ".parametrizations." not in k}
    for name, module in codec.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            state[f"{name}.weight"] = module.weight.detach()
    with torch.random.fork_rng(devices=[]):
        fresh = type(codec)(copy.deepcopy(codec.config))
    fresh.load_state_dict({k: v.detach().float().cpu() for k, v in state.items()}, strict=True)
    return fresh.eval()


def weights_without_codebooks(codec: LLMCodecModel) -> dict[str, torch.Tensor]:
    """
    `folded_codec(codec)`'s state dict without the frozen codebooks (which the LM rebuilds): what the embedded
    default codec ships as `weights_without_codebooks.safetensors`. Tensors are contiguous float32 on the CPU.
    """
    state = folded_codec(codec).state_dict()
    return {k: v.contiguous() for k, v in state.items() if not k.endswith(".codebook")}


def export_codec(codec: LLMCodecModel, path: str | Path) -> Path:
    """`save_pretrained(path)` of `folded_codec(codec)` (no weight-norm keys); returns the folder."""
    folded_codec(codec).save_pretrained(str(path))
    return Path(path)


class CodecTrainingModule(nn.Module):
    """
    The generator side of training: the codec plus the learned heads of the auxiliary losses (all trained by the
    generator optimizer).

    Args:
        codec (`LLMCodecModel`).
        consistency_dim (`int`, *optional*): width of the frame teacher's features (adds `consistency_head`,
            Linear teacher_dim -> latent_dim).
        semantic_dim (`int`, *optional*): width of the clip teacher's embedding (adds `semantic_head`,
            Linear latent_dim -> semantic_dim).
        distill_dim (`int`, *optional*): width of the distillation teacher's frame features (adds `distill_head`,
            Linear latent_dim -> distill_dim).
        consistency_layer (`int`, defaults to 1), semantic_layer (`int`, defaults to 0), distill_layer (`int`,
            defaults to 0): 0-based VQ layers.
        decoder_only (`bool`, defaults to `False`): freeze the encoder and quantizer (no gradient, codes unchanged);
            only the decoder learns, and no VQ / consistency / semantic losses are returned.
    """

    def __init__(self, codec: LLMCodecModel, consistency_dim: int | None = None, semantic_dim: int | None = None,
                 consistency_layer: int = 1, semantic_layer: int = 0, decoder_only: bool = False,
                 distill_dim: int | None = None, distill_layer: int = 0):
        super().__init__()
        self.codec = codec
        self.decoder_only = decoder_only
        if decoder_only:
            if consistency_dim or semantic_dim or distill_dim:
                raise ValueError("A decoder-only run has no VQ-layer losses: pass no consistency/semantic/distill teacher.")
            for name, parameter in codec.named_parameters():
                if not name.startswith("decoder."):
                    parameter.requires_grad_(False)
        latent = codec.config.latent_dim
        for name, layer in (("consistency_layer", consistency_layer), ("semantic_layer", semantic_layer),
                            ("distill_layer", distill_layer)):
            if not 0 <= layer < codec.config.num_quantizers:
                raise ValueError(f"`{name}` {layer} is not a VQ layer (0..{codec.config.num_quantizers - 1}).")
        self.consistency_layer, self.semantic_layer = consistency_layer, semantic_layer
        self.consistency_head = nn.Linear(consistency_dim, latent) if consistency_dim else None
        self.semantic_head = nn.Linear(latent, semantic_dim) if semantic_dim else None
        self.distill_layer = distill_layer
        self.distill_head = nn.Linear(latent, distill_dim) if distill_dim else None

    def forward(self, audio: torch.Tensor, teacher_features: torch.Tensor | None = None,
                teacher_embedding: torch.Tensor | None = None,
                distill_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """
        Args:
            audio (`torch.FloatTensor` of shape `(batch, 1, samples)`).
            teacher_features (`(batch, teacher_frames, teacher_dim)`, *optional*): frame-teacher output.
            teacher_embedding (`(batch, semantic_dim)`, *optional*): clip-teacher output.
            distill_features (`(batch, teacher_frames, distill_dim)`, *optional*): distillation-teacher output.

        Returns:
            `dict` with `audio` (reconstruction `(batch, 1, samples)`), scalar `commitment` and `codebook` losses,
            and `consistency` / `semantic` / `distill` when their teacher output and head are there.
        """
        codec = self.codec
        samples = audio.shape[-1]
        if self.decoder_only:
            with torch.no_grad():
                quantized = codec.quantizer(codec.encode_latents(audio))[0]
            return {"audio": codec.decoder(quantized)[..., :samples]}
        latents = codec.encode_latents(audio)
        quantized, _, commitment, codebook, per_layer = codec.quantizer(latents)
        reconstruction = codec.decoder(quantized)[..., :samples]
        out = {"audio": reconstruction}
        if commitment is not None:
            out["commitment"], out["codebook"] = commitment.mean(), codebook.mean()
        valid_frames = math.ceil(samples / codec.config.hop_length)
        if teacher_features is not None and self.consistency_head is not None:
            layer = per_layer[self.consistency_layer][..., :valid_frames]
            out["consistency"] = consistency_loss(layer, teacher_features, self.consistency_head)
        if teacher_embedding is not None and self.semantic_head is not None:
            layer = per_layer[self.semantic_layer][..., :valid_frames]
            out["semantic"] = semantic_loss(layer, teacher_embedding, self.semantic_head)
        if distill_features is not None and self.distill_head is not None:
            layer = per_layer[self.distill_layer][..., :valid_frames]
            stride = codec.config.vq_strides[self.distill_layer]
            out["distill"] = distillation_loss(layer, distill_features, self.distill_head, stride)
        return out


def _resample(audio: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    if source_rate == target_rate:
        return audio
    import soxr

    array = audio.detach().float().cpu().numpy()
    rows = [soxr.resample(row, source_rate, target_rate, quality="HQ") for row in array.reshape(-1, array.shape[-1])]
    out = torch.from_numpy(np.stack(rows).astype(np.float32))
    return out.reshape(*audio.shape[:-1], out.shape[-1]).to(audio.device)


class _SchedulerState:
    """Wraps the two LR schedulers for `accelerator.register_for_checkpointing`."""

    def __init__(self, *schedulers):
        self.schedulers = [s for s in schedulers if s is not None]

    def state_dict(self):
        return {"schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state):
        for scheduler, values in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(values)


# ------------------------------------------------------------------------------------------------------ metrics


def _nan_reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".strip()[:300]


def audio_metrics(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> tuple[dict, dict]:
    """
    PESQ-WB (`pesq`, at 16 kHz) and STOI (`pystoi`) of one clip.

    Args:
        reference, estimate (`np.ndarray` of shape `(samples,)`), sample_rate (`int`).

    Returns:
        `(values, errors)`: `values` maps "pesq_wb" and "stoi" to floats (NaN when the metric failed or its package
        is missing) and `errors` maps the failed ones to the reason.
    """
    values, errors = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both packages warn on silence / very short clips
        return _audio_metrics(reference, estimate, sample_rate, values, errors)


def _audio_metrics(reference, estimate, sample_rate, values, errors):
    try:
        from pesq import pesq

        ref16 = _resample(torch.from_numpy(reference), sample_rate, 16000).numpy().astype(np.float64)
        est16 = _resample(torch.from_numpy(estimate), sample_rate, 16000).numpy().astype(np.float64)
        values["pesq_wb"] = float(pesq(16000, ref16, est16, "wb"))
    except Exception as error:  # noqa: BLE001 - PESQ refuses silence / noise with its own errors
        values["pesq_wb"], errors["pesq_wb"] = float("nan"), _nan_reason(error)
    try:
        from pystoi import stoi

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = float(stoi(reference.astype(np.float64), estimate.astype(np.float64), sample_rate, extended=False))
        short = [str(w.message) for w in caught if "Not enough STFT frames" in str(w.message)]
        if short:  # pystoi then returns the sentinel 1e-5
            value, errors["stoi"] = float("nan"), short[0][:300]
        values["stoi"] = value
    except Exception as error:  # noqa: BLE001
        values["stoi"], errors["stoi"] = float("nan"), _nan_reason(error)
    return values, errors


def save_spectrogram_png(path: str | Path, original: np.ndarray, reconstruction: np.ndarray, sample_rate: int,
                         title: str = "") -> Path:
    """Writes a two-panel log-magnitude spectrogram (original above, reconstruction below) as PNG."""
    from ..plotting import plot_spectrograms

    return plot_spectrograms({"original": original, "reconstruction": reconstruction}, sample_rate, path, title or None)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------------ trainer


class Trainer:
    """
    Trains an LLM-Codec.

    Args:
        config (`TrainingConfig`).
        codec (`LLMCodecModel`, *optional*): the codec to train (default: `build_codec(config, lm, tokenizer)`).
        train_data (*optional*): overrides `config.train_data` (a path, list of paths or `datasets.Dataset`).
        val_data (*optional*): overrides `config.val_data`.
        consistency_teacher (*optional*): a `FrameTeacher` object (default: `load_teacher(config.consistency_teacher)`;
            a teacher that cannot be loaded is skipped with a warning unless `config.teacher_required`).
        semantic_teacher (*optional*): a `ClipTeacher` (`None` skips the semantic loss).
        distill_teacher (*optional*): a `FrameTeacher` object for the semantic distillation into layer 1 (default:
            `load_teacher(config.distill_teacher)`, the consistency teacher itself when both name the same one).
        lm, tokenizer (*optional*): a loaded LM and tokenizer for `build_codec`.
        accelerator (*optional*): an `accelerate.Accelerator` (default: one with `config.mixed_precision`).

    Attributes:
        step (`int`): completed training steps.
    """

    def __init__(self, config: TrainingConfig, codec: LLMCodecModel | None = None, train_data=None, val_data=None,
                 consistency_teacher=None, semantic_teacher=None, lm=None, tokenizer=None, accelerator=None,
                 distill_teacher=None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.config = config
        self.output_dir = Path(config.output_dir)
        self.accelerator = accelerator or Accelerator(mixed_precision=config.mixed_precision)
        self.device = self.accelerator.device
        set_seed(config.seed)
        self.step = 0

        # ---- codec
        codec = codec if codec is not None else build_codec(config, lm, tokenizer)
        codec.float()
        if not has_weight_norm(codec):
            codec.apply_weight_norm()
        codec.train()
        for name, _ in codec.named_parameters():
            if name.endswith(".codebook"):
                raise RuntimeError(f"{name} is a parameter: the LLM codebooks must stay frozen buffers.")
        self.sample_rate = codec.config.sample_rate
        weights = config.loss_weights

        # ---- teachers (they only shape the encoder/VQ side, which a decoder-only run freezes)
        decoder_only = config.trainable == "decoder"
        self.teacher = None if decoder_only else self._frame_teacher(
            consistency_teacher, config.consistency_teacher, weights["consistency"], "consistency")
        if distill_teacher is None and config.distill_teacher and config.distill_teacher == config.consistency_teacher:
            distill_teacher = self.teacher  # one teacher forward serves both losses
        self.distill_teacher = None if decoder_only else self._frame_teacher(
            distill_teacher, config.distill_teacher, weights["distill"], "semantic distillation")
        self.semantic_teacher = semantic_teacher if weights["semantic"] > 0 and not decoder_only else None
        for module in (self.teacher, self.distill_teacher, self.semantic_teacher):
            if isinstance(module, nn.Module):
                module.to(self.device)
        teacher = self.teacher

        generator = CodecTrainingModule(
            codec,
            consistency_dim=teacher.dim if teacher is not None else None,
            semantic_dim=self.semantic_teacher.dim if self.semantic_teacher is not None else None,
            consistency_layer=config.consistency_layer,
            semantic_layer=config.semantic_layer,
            decoder_only=decoder_only,
            distill_dim=self.distill_teacher.dim if self.distill_teacher is not None else None,
            distill_layer=config.distill_layer,
        )
        self.adversarial = weights["adversarial"] > 0 or weights["feature_matching"] > 0
        discriminator = (
            CodecDiscriminator(
                sample_rate=self.sample_rate,
                hop_lengths=config.disc_hop_lengths,
                hidden_channels=config.disc_hidden_channels,
                domain=config.disc_domain,
                mel_scale=config.disc_mel_scale,
                periods=config.disc_periods,
                period_channels=config.disc_period_channels,
            )
            if self.adversarial
            else None
        )

        # ---- losses
        self.mel_loss = MultiScaleMelLoss(self.sample_rate, config.mel_window_lengths, config.mel_n_mels).to(self.device)
        self.stft_loss = MultiScaleSTFTLoss(config.stft_window_lengths).to(self.device) if weights["stft"] > 0 else None

        # ---- optimisers
        betas = tuple(float(b) for b in config.betas)
        self.trainable_g = [p for p in generator.parameters() if p.requires_grad]  # decoder-only runs freeze some
        opt_g = torch.optim.AdamW(self.trainable_g, lr=config.lr_generator, betas=betas, eps=config.eps,
                                  weight_decay=config.weight_decay)
        sched_g = torch.optim.lr_scheduler.ExponentialLR(opt_g, gamma=config.lr_decay_gamma)
        opt_d = sched_d = None
        if discriminator is not None:
            opt_d = torch.optim.AdamW(discriminator.parameters(), lr=config.lr_discriminator, betas=betas,
                                      eps=config.eps, weight_decay=config.weight_decay)
            sched_d = torch.optim.lr_scheduler.ExponentialLR(opt_d, gamma=config.lr_decay_gamma)
        # Schedulers are stepped here once per step (not prepared: accelerate would step them once per process).
        self.sched_g, self.sched_d = sched_g, sched_d
        if discriminator is not None:
            self.generator, self.discriminator, self.opt_g, self.opt_d = self.accelerator.prepare(
                generator, discriminator, opt_g, opt_d
            )
        else:
            self.generator, self.opt_g = self.accelerator.prepare(generator, opt_g)
            self.discriminator = self.opt_d = None
        self.accelerator.register_for_checkpointing(_SchedulerState(sched_g, sched_d))

        # ---- data
        train_data = train_data if train_data is not None else config.train_data
        if train_data is None:
            raise ValueError("No training data: set `train_data` in the config or pass --data.")
        sources = resolve_sources(train_data, config.audio_column, config.path_column)
        val_data = val_data if val_data is not None else config.val_data
        if val_data is not None:
            val_all = resolve_sources(val_data, config.audio_column, config.path_column)
            val_sources = [val_all[i] for i in range(min(len(val_all), config.num_val_clips))]
        else:
            held = min(config.num_val_clips, len(sources) - 1)
            sources, val_sources = split_holdout(sources, max(0, held), config.seed)
        self.train_dataset = AudioCropDataset(sources, self.sample_rate, config.crop_seconds, config.gain_db)
        self.val_clips = load_validation_clips(val_sources, self.sample_rate, config.val_seconds)
        if not self.val_clips:
            logger.warning("No validation clips: evaluation is skipped.")
        unit = codec.config.pad_multiple
        if self.train_dataset.crop_samples % unit:
            logger.info(
                "crop of %d samples is not a multiple of the codec's pad_multiple (%d): the codec pads each crop to %d.",
                self.train_dataset.crop_samples, unit, -(-self.train_dataset.crop_samples // unit) * unit,
            )

    # ------------------------------------------------------------------------------------------------ accessors

    @property
    def codec(self) -> LLMCodecModel:
        """The codec being trained (unwrapped, with weight norm)."""
        return self.accelerator.unwrap_model(self.generator).codec

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _log(self, record: dict):
        if not self.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(_json_safe(record)) + "\n")

    # --------------------------------------------------------------------------------------------------- a step

    def _frame_teacher(self, teacher, spec, weight: float, what: str):
        """The frame teacher for one loss: `teacher` if given, else `load_teacher(spec)`; `None` when the loss is off
        (no teacher, weight 0) or the teacher cannot be loaded (a warning, or the error with `teacher_required`)."""
        if weight <= 0:
            return None
        if teacher is None and spec:
            try:
                teacher = load_teacher(spec)
            except (TeacherUnavailable, FileNotFoundError) as error:
                if self.config.teacher_required:
                    raise
                warnings.warn(f"The {what} teacher is unavailable, the {what} loss is skipped: {error}")
                return None
        return teacher

    def _teacher_outputs(self, audio: torch.Tensor):
        """`(consistency features, clip embedding, distillation features)`, each `None` when its teacher is off."""
        outputs = {}
        with torch.no_grad():
            for teacher in (self.teacher, self.distill_teacher):
                if teacher is not None and id(teacher) not in outputs:
                    outputs[id(teacher)] = teacher.features(_resample(audio, self.sample_rate, teacher.sample_rate)).float()
            embedding = None
            if self.semantic_teacher is not None:
                embedding = self.semantic_teacher.embed(
                    _resample(audio, self.sample_rate, self.semantic_teacher.sample_rate)
                ).float()
        features = outputs.get(id(self.teacher)) if self.teacher is not None else None
        distill = outputs.get(id(self.distill_teacher)) if self.distill_teacher is not None else None
        return features, embedding, distill

    def train_step(self, audio: torch.Tensor) -> dict[str, float]:
        """
        One optimisation step on a batch.

        Args:
            audio (`torch.FloatTensor` of shape `(batch, 1, samples)`) on the accelerator's device.

        Returns:
            `dict[str, float]`: the losses, `loss_g`, `loss_d`, gradient norms and learning rates.
        """
        config, weights = self.config, self.config.loss_weights
        features, embedding, distill = self._teacher_outputs(audio)
        out = self.generator(audio, teacher_features=features, teacher_embedding=embedding, distill_features=distill)
        reconstruction = out["audio"]
        adversarial = self.discriminator is not None and self.step >= config.discriminator_start_step
        logs: dict[str, float] = {}

        if adversarial:
            batch = audio.shape[0]
            logits, _ = self.discriminator(torch.cat([audio, reconstruction.detach()]))
            loss_d = discriminator_loss([x[:batch] for x in logits], [x[batch:] for x in logits])
            self.opt_d.zero_grad(set_to_none=True)
            self.accelerator.backward(loss_d)
            if config.grad_clip_discriminator:
                norm = self.accelerator.clip_grad_norm_(self.discriminator.parameters(), config.grad_clip_discriminator)
                logs["grad_norm_d"] = float(norm)
            self.opt_d.step()
            self.sched_d.step()
            logs["loss_d"] = float(loss_d.detach())

        losses = {"mel": self.mel_loss(reconstruction, audio)}
        if self.stft_loss is not None:
            losses["stft"] = self.stft_loss(reconstruction, audio)
        if adversarial:
            fake_logits, fake_features = self.discriminator(reconstruction)
            with torch.no_grad():
                _, real_features = self.discriminator(audio)
            losses["adversarial"] = generator_adversarial_loss(fake_logits)
            losses["feature_matching"] = feature_matching_loss(real_features, fake_features)
        for name in ("commitment", "codebook", "consistency", "semantic", "distill"):
            if name in out:
                losses[name] = out[name]
        total = sum(weights[name] * value.float() for name, value in losses.items() if weights[name])
        self.opt_g.zero_grad(set_to_none=True)
        self.accelerator.backward(total)
        if config.grad_clip_generator:
            norm = self.accelerator.clip_grad_norm_(self.trainable_g, config.grad_clip_generator)
            logs["grad_norm_g"] = float(norm)
        self.opt_g.step()
        self.sched_g.step()
        if self.discriminator is not None:
            # the generator loss also reached the discriminator's parameters: drop those gradients now
            self.opt_d.zero_grad(set_to_none=True)
        logs.update({name: float(value.detach()) for name, value in losses.items()})
        logs["loss_g"] = float(total.detach())
        logs["lr_g"] = self.sched_g.get_last_lr()[0]
        self.step += 1
        return logs

    # ------------------------------------------------------------------------------------------------ the loop

    def train(self, max_steps: int | None = None, resume: bool | str = False) -> dict:
        """
        Trains until `max_steps` (default `config.max_steps`) steps are done, logging, evaluating and saving as the
        config says; with `resume` (True: the `latest` checkpoint of `output_dir`, or a checkpoint folder) it first
        restores that state and continues exactly. Returns the last logged training record.
        """
        config = self.config
        max_steps = int(max_steps if max_steps is not None else config.max_steps)
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.output_dir / "training_config.yaml")
        if resume:
            checkpoint = self.latest_checkpoint() if resume is True else Path(resume)
            if checkpoint is None:
                logger.warning("--resume: no checkpoint in %s, starting from scratch.", self.output_dir / CHECKPOINTS)
            else:
                self.load_checkpoint(checkpoint)
        if self.step >= max_steps:
            logger.info("Already at step %d >= max_steps %d: nothing to do.", self.step, max_steps)
            return {}
        loader = make_dataloader(
            self.train_dataset, config.batch_size, seed=config.seed, start_step=self.step, end_step=max_steps,
            num_workers=config.num_workers, num_processes=self.accelerator.num_processes,
            process_index=self.accelerator.process_index,
        )
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, initial=self.step, disable=not (config.progress and self.is_main), desc="train",
                   dynamic_ncols=True)
        sums: dict[str, float] = {}
        count, started, record = 0, time.perf_counter(), {}
        deadline = None if config.time_limit_minutes is None else time.monotonic() + 60 * config.time_limit_minutes
        for batch in loader:
            logs = self.train_step(batch.to(self.device, non_blocking=True))
            for name, value in logs.items():
                sums[name] = sums.get(name, 0.0) + value
            count += 1
            bar.update(1)
            bar.set_postfix({k: f"{logs[k]:.3g}" for k in ("mel", "loss_g", "loss_d") if k in logs})
            out_of_time = deadline is not None and time.monotonic() >= deadline
            last = self.step >= max_steps or out_of_time
            if count and (self.step % max(1, config.log_every) == 0 or last):
                elapsed = time.perf_counter() - started
                names = sorted(sums)
                means = torch.tensor([sums[k] / count for k in names], dtype=torch.float64, device=self.device)
                if self.accelerator.num_processes > 1:  # average over the processes' batches
                    means = self.accelerator.reduce(means, reduction="mean")
                record = {"type": "train", "step": self.step, **dict(zip(names, means.tolist())),
                          "sec_per_step": elapsed / count, "time": time.time()}
                self._log(record)
                sums, count, started = {}, 0, time.perf_counter()
            if config.eval_every and (self.step % config.eval_every == 0 or last):
                self.evaluate()
            if config.save_every and (self.step % config.save_every == 0 or last):
                self.save_checkpoint()
            if out_of_time:
                logger.info("Time limit of %s minutes reached at step %d.", config.time_limit_minutes, self.step)
                break
        bar.close()
        if self.is_main and not config.save_every:
            export_codec(self.codec, self.output_dir / "model")
        self.accelerator.wait_for_everyone()
        return record

    # ------------------------------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> dict:
        """
        Reconstructs the validation clips (eval mode, decoder noise from a fixed seed, so training randomness is
        untouched) and computes the mean PESQ-WB, STOI and multi-scale mel distance; writes `metrics.json`,
        `spectrogram.png`, `reconstruction.wav` (and `original.wav`) of the first clip under
        `eval/step_XXXXXXXX/` and a record to `log.jsonl`. Runs on the main process only; returns the metrics.
        """
        if not self.is_main or not self.val_clips:
            self.accelerator.wait_for_everyone()
            return {}
        from ..audio_io import save_audio

        codec = self.codec
        was_training = codec.training
        codec.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        folder = self.output_dir / "eval" / f"step_{self.step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        per_clip, errors = [], {}
        try:
            for index, clip in enumerate(self.val_clips):
                clip = clip.to(self.device)
                reconstruction = codec(clip, generator=generator).audio_values.float()
                values, clip_errors = audio_metrics(clip[0, 0].cpu().numpy(), reconstruction[0, 0].cpu().numpy(),
                                                    self.sample_rate)
                values["mel_distance"] = float(self.mel_loss(reconstruction, clip))
                per_clip.append(values)
                for name, reason in clip_errors.items():
                    errors.setdefault(name, []).append(f"clip {index}: {reason}")
                if index == 0:
                    save_audio(folder / "reconstruction.wav", reconstruction[0].cpu(), self.sample_rate)
                    original = self.output_dir / "eval" / "original.wav"
                    if not original.exists():
                        save_audio(original, clip[0].cpu(), self.sample_rate)
                    save_spectrogram_png(folder / "spectrogram.png", clip[0, 0].cpu().numpy(),
                                         reconstruction[0, 0].cpu().numpy(), self.sample_rate, f"(step {self.step})")
        finally:
            codec.train(was_training)
        metrics = {}
        for name in per_clip[0]:
            column = np.array([m[name] for m in per_clip], dtype=np.float64)
            metrics[name] = float(np.nanmean(column)) if np.isfinite(column).any() else float("nan")
        record = {"type": "eval", "step": self.step, **metrics, "num_clips": len(per_clip), "time": time.time()}
        if errors:
            record["errors"] = errors
        (folder / "metrics.json").write_text(json.dumps(_json_safe({**record, "per_clip": per_clip}), indent=2))
        self._log(record)
        self.accelerator.wait_for_everyone()
        return record

    # ----------------------------------------------------------------------------------------------- checkpoints

    def latest_checkpoint(self) -> Path | None:
        """The folder named by `checkpoints/latest`, or `None`."""
        pointer = self.output_dir / CHECKPOINTS / LATEST
        if not pointer.is_file():
            return None
        folder = self.output_dir / CHECKPOINTS / pointer.read_text().strip()
        return folder if folder.is_dir() else None

    def save_checkpoint(self) -> Path:
        """
        Saves the full training state to `checkpoints/step_XXXXXXXX` (accelerate state: models, optimizers,
        schedulers, RNG states; plus `trainer_state.json`), points `checkpoints/latest` at it, keeps the newest
        `keep_last`, and refreshes `model/` (the codec, weight norm folded).
        """
        folder = self.output_dir / CHECKPOINTS / f"step_{self.step:08d}"
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(folder))
        if self.is_main:
            (folder / STATE_FILE).write_text(json.dumps({"step": self.step, "config": self.config.to_dict()}, indent=2))
            pointer = self.output_dir / CHECKPOINTS / LATEST
            tmp = pointer.with_suffix(".tmp")
            tmp.write_text(folder.name)
            tmp.replace(pointer)
            kept = sorted(p for p in (self.output_dir / CHECKPOINTS).glob("step_*") if p.is_dir())
            for old in kept[: max(0, len(kept) - self.config.keep_last)]:
                shutil.rmtree(old, ignore_errors=True)
            export_codec(self.codec, self.output_dir / "model")
        self.accelerator.wait_for_everyone()
        return folder

    def load_checkpoint(self, folder: str | Path):
        """Restores a state written by `save_checkpoint` (weights, optimizers, schedulers, RNG, step)."""
        folder = Path(folder)
        state = json.loads((folder / STATE_FILE).read_text())
        self.accelerator.load_state(str(folder))
        self.step = int(state["step"])
        logger.info("Resumed from %s (step %d).", folder, self.step)


def train(config: TrainingConfig, resume: bool | str = False, max_steps: int | None = None, **trainer_kwargs) -> Trainer:
    """Builds a `Trainer` from `config` (extra arguments go to it), trains, and returns it."""
    trainer = Trainer(config, **trainer_kwargs)
    trainer.train(max_steps=max_steps, resume=resume)
    return trainer


__all__ = [
    "CodecTrainingModule",
    "Trainer",
    "audio_metrics",
    "build_codec",
    "count_parameters",
    "export_codec",
    "folded_codec",
    "has_weight_norm",
    "load_word_list",
    "save_spectrogram_png",
    "train",
    "weights_without_codebooks",
]
