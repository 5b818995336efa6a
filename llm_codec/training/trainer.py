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
    <tracker_project>/             TensorBoard event files, with `log_with: tensorboard` (other trackers: their own
                                   place, e.g. W&B's `wandb/`)

Experiment tracking: with `config.log_with` (or `Trainer(log_with=...)`, which also takes `GeneralTracker` objects)
every record written to `log.jsonl` is also sent, as scalars, to accelerate's trackers (`accelerator.log`; see
`tracker_scalars`), after `accelerator.init_trackers(config.tracker_project, config.to_flat_dict())`.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..audio_io import resample, save_audio
from ..evaluation.metrics import speech_scores
from ..evaluation.report import json_safe
from ..mel import MultiScaleMelLoss
from ..modeling_llm_codec import LLMCodecModel, is_rebuilt_weight
from ..plotting import plot_spectrograms
from .build import build_codec, check_codec_teacher, has_weight_norm, load_codec_teacher
from .config import TrainingConfig
from .data import AudioCropDataset, load_validation_clips, make_dataloader, resolve_sources, split_holdout
from .discriminators import CodecDiscriminator
from .export import export_codec
from .generator import CodecTrainingModule
from .losses import MultiScaleSTFTLoss, STOILoss, discriminator_loss, feature_matching_loss, generator_adversarial_loss
from .semantic_layer1 import draw_fit_clips, fit_layer1_groups, fit_semantic_layer1
from .teachers import TeacherUnavailable, load_teacher

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "trainer_state.json"
REBUILT_KEY = "rebuilt_weights"  # trainer_state.json: sha256 of each frozen tensor left out of the checkpoint


def lr_schedule(optimizer, gamma: float, warmup_steps: int = 0):
    """The learning-rate schedule, stepped once per training step: a linear rise over `warmup_steps` (from
    1 / warmup_steps of the rate at the first step to all of it), times `gamma ** step`. Without warmup it is
    `ExponentialLR(optimizer, gamma)`."""
    if warmup_steps <= 0:
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) * gamma ** step
    )


def tensor_sha256(tensor: torch.Tensor) -> str:
    """The sha256 of a tensor's bytes (any dtype), to check that a rebuilt frozen tensor is the one trained with."""
    import hashlib

    return hashlib.sha256(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()

# What to `pip install` for each of accelerate's built-in trackers.
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard (or tensorboardX)",
    "wandb": "wandb",
    "comet_ml": "comet-ml",
    "aim": "'aim<4'",
    "mlflow": "mlflow",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
}
# Keys of a `log.jsonl` record that are not sent to the trackers: `step` is their step, `type` their prefix,
# `time` a wall-clock timestamp.
_NOT_TRACKED = ("type", "step", "time")


def check_trackers(log_with) -> list:
    """
    Checks the experiment trackers asked for, before anything is built: accelerate's own check
    (`accelerate.tracking.filter_trackers`) drops a tracker whose package is missing with only a debug message.

    Args:
        log_with (`str`, `accelerate.tracking.GeneralTracker` or a list of them, *optional*): tracker names (the
            built-in ones, "all", or names registered with `accelerate.tracking.register_tracker_class`) and/or
            tracker objects.

    Returns:
        `list`: the names (built-in ones in lower case) and objects, without repeats; empty for none.

    Raises:
        `ValueError`: an unknown name (the message lists the known ones), a tracker class instead of an object,
            a built-in tracker whose package is not installed, or "all" with no tracker installed (the messages say
            what to `pip install`).
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker, get_available_trackers

    if log_with is None:
        return []
    items = log_with if isinstance(log_with, (list, tuple)) else [log_with]
    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    known = sorted(LOGGER_TYPE_TO_CLASS)
    checked = []
    for item in items:
        if isinstance(item, GeneralTracker):
            if item not in checked:
                checked.append(item)
            continue
        if isinstance(item, type) and issubclass(item, GeneralTracker):
            raise ValueError(f"Pass an instance of the tracker class {item.__name__}, not the class, in `log_with`.")
        name = str(getattr(item, "value", item)).strip()  # a `LoggerType` too
        if name not in LOGGER_TYPE_TO_CLASS and name.lower() in (*LOGGER_TYPE_TO_CLASS, "all"):
            name = name.lower()
        if name == "all":
            if not available and not any(isinstance(i, GeneralTracker) for i in items):
                raise ValueError(
                    "log_with 'all' asks for every installed experiment tracker, and none is installed: install one, "
                    "e.g. `pip install tensorboard`.")
        elif name not in LOGGER_TYPE_TO_CLASS:
            raise ValueError(f"Unknown experiment tracker {name!r} in log_with; accelerate knows {known} (or 'all', or "
                             "a `GeneralTracker` object from Python).")
        elif name in TRACKER_PACKAGES and name not in available:
            raise ValueError(f"The experiment tracker {name!r} needs a package that is not installed: "
                             f"pip install {TRACKER_PACKAGES[name]}")
        if name not in checked:
            checked.append(name)
    return checked


def _tracker_name(tracker) -> str:
    """The name of a tracker object (its `name`), a `LoggerType` (its value) or a name."""
    from accelerate.tracking import GeneralTracker

    return str(tracker.name) if isinstance(tracker, GeneralTracker) else str(getattr(tracker, "value", tracker))


def tracker_scalars(record: dict, prefix: str = "") -> dict[str, int | float]:
    """
    The numbers of a `log.jsonl` record as tracker scalars: nested mappings flattened with "/" (`{"loss": {"mel":
    x}}` -> `loss/mel`), `prefix` + "/" before every name when given; `bool` as 0/1, numpy and one-element torch
    values as Python numbers; NaN, infinities, text, lists and `None` left out. `type`, `step` and `time` (see
    `_NOT_TRACKED`) are left out at the top level.

    Args:
        record (`dict`): a record as given to `Trainer._log`.
        prefix (`str`, *optional*): e.g. the record's type, "train" or "eval".

    Returns:
        `dict[str, int | float]`.
    """
    out: dict[str, int | float] = {}

    def add(name: str, value):
        if isinstance(value, dict):
            for key, item in value.items():
                add(f"{name}/{key}", item)
            return
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                return
            value = value.item()
        if isinstance(value, (bool, np.bool_)):
            value = int(value)
        if isinstance(value, numbers.Integral):
            out[name] = int(value)
        elif isinstance(value, numbers.Real) and math.isfinite(float(value)):
            out[name] = float(value)

    for key, value in record.items():
        if key not in _NOT_TRACKED:
            add(f"{prefix}/{key}" if prefix else str(key), value)
    return out


def _resampled(audio: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    """`audio` (..., samples) resampled along its last axis (`audio_io.resample`), on its device, in float32."""
    if source_rate == target_rate:
        return audio
    out = resample(audio.detach().float().cpu().numpy(), source_rate, target_rate)
    return torch.from_numpy(out).to(audio.device)


class _SchedulerState:
    """Wraps the two LR schedulers for `accelerator.register_for_checkpointing`."""

    def __init__(self, *schedulers):
        self.schedulers = [s for s in schedulers if s is not None]

    def state_dict(self):
        return {"schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state):
        for scheduler, values in zip(self.schedulers, state["schedulers"]):
            scheduler.load_state_dict(values)


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
        accelerator (*optional*): an `accelerate.Accelerator` (default: one with `config.mixed_precision`, the
            trackers of `log_with` and `project_dir=config.output_dir`). A given accelerator's own trackers are used:
            started ones (its `init_trackers` already called) as they are (and left running at the end), else the
            trainer starts those of its `log_with` and finishes them; `log_with` / `config.log_with` are then
            ignored (with a warning when they differ), and it is an error to ask for trackers it was built without.
        log_with (`str`, `accelerate.tracking.GeneralTracker` or a list of them, *optional*): overrides
            `config.log_with`: tracker names and/or tracker objects (see `check_trackers`).
        codec_teacher (`LLMCodecModel`, *optional*): the codec whose output is matched (default: the one
            `config.codec_teacher` names, loaded by `load_codec_teacher`); used only when `config.codec_teacher` is
            set.

    Attributes:
        step (`int`): completed training steps.
    """

    def __init__(self, config: TrainingConfig, codec: LLMCodecModel | None = None, train_data=None, val_data=None,
                 consistency_teacher=None, semantic_teacher=None, lm=None, tokenizer=None, accelerator=None,
                 distill_teacher=None, log_with=None, codec_teacher=None):
        from accelerate import Accelerator  # optional dependency (the "train" extra)
        from accelerate.utils import set_seed

        self.config = config
        self.output_dir = Path(config.output_dir)
        trackers = check_trackers(log_with if log_with is not None else config.log_with)  # fail before any work
        if accelerator is None:
            accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=trackers or None,
                                      project_dir=str(self.output_dir))
        else:
            self._check_accelerator_trackers(accelerator, trackers)
        self.accelerator = accelerator
        self._started_trackers = False  # whether `train` started the accelerator's trackers (and must finish them)
        self.device = self.accelerator.device
        set_seed(config.seed)
        self.step = 0
        codec = self._prepare_codec(codec if codec is not None else build_codec(config, lm, tokenizer))
        self.sample_rate = codec.config.sample_rate
        self._load_teachers(consistency_teacher, semantic_teacher, distill_teacher)
        self.codec_teacher = None
        if config.codec_teacher is not None:
            self.codec_teacher = check_codec_teacher(
                codec_teacher if codec_teacher is not None else load_codec_teacher(config.codec_teacher, lm, tokenizer),
                codec).to(self.device)
        self.mel_loss = MultiScaleMelLoss(self.sample_rate, config.mel_window_lengths, config.mel_n_mels,
                                          low_band_hz=config.mel_low_band_hz,
                                          low_band_weight=config.mel_low_band_weight).to(self.device)
        # the `mel_distance` metric of `evaluate`: every band alike, whatever weights the loss uses
        self.mel_metric = (MultiScaleMelLoss(self.sample_rate, config.mel_window_lengths, config.mel_n_mels)
                           .to(self.device) if self.mel_loss.band_weighted else self.mel_loss)
        self.stft_loss = (MultiScaleSTFTLoss(config.stft_window_lengths).to(self.device)
                          if config.loss_weights["stft"] > 0 else None)
        self.stoi_loss = STOILoss(self.sample_rate).to(self.device) if config.loss_weights["stoi"] > 0 else None
        self._prepare_models_and_optimizers(codec)
        self._load_data(train_data, val_data, codec.config.pad_multiple)

    @staticmethod
    def _check_accelerator_trackers(accelerator, trackers: list):
        """For an accelerator given by the caller: it must have trackers when `trackers` (those asked for by
        `log_with`) is not empty; a warning when they are others than its own."""
        own = [_tracker_name(t) for t in (accelerator.trackers or accelerator.log_with or [])]
        asked = [_tracker_name(t) for t in trackers]
        if asked and not own:
            raise ValueError(
                f"Experiment trackers {asked} were asked for (log_with), but the accelerator passed to the Trainer has "
                "none: build it with `Accelerator(log_with=..., project_dir=...)`, or leave log_with empty.")
        if asked and sorted(asked) != sorted(own):
            warnings.warn(f"The Trainer logs to the trackers of the accelerator passed to it ({own}); log_with "
                          f"{asked} is ignored.")

    @staticmethod
    def _prepare_codec(codec: LLMCodecModel) -> LLMCodecModel:
        """`codec` in float32 and train mode, weight-normalised; its LLM codebooks must be buffers."""
        codec.float()
        if not has_weight_norm(codec):
            codec.apply_weight_norm()
        codec.train()
        for name, _ in codec.named_parameters():
            if name.endswith(".codebook"):
                raise RuntimeError(f"{name} is a parameter: the LLM codebooks must stay frozen buffers.")
        return codec

    def _load_teachers(self, consistency_teacher, semantic_teacher, distill_teacher):
        """Sets `teacher`, `distill_teacher` and `semantic_teacher` (each `None` when its loss is off); they only
        shape the encoder / VQ side, which a decoder-only run freezes."""
        config, weights = self.config, self.config.loss_weights
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

    def _prepare_models_and_optimizers(self, codec: LLMCodecModel):
        """The generator (codec + teacher heads), the discriminator when adversarial losses are on, their AdamW
        optimisers and exponential schedulers, prepared by the accelerator."""
        config, weights = self.config, self.config.loss_weights
        generator = CodecTrainingModule(
            codec,
            consistency_dim=self.teacher.dim if self.teacher is not None else None,
            semantic_dim=self.semantic_teacher.dim if self.semantic_teacher is not None else None,
            consistency_layer=config.consistency_layer,
            semantic_layer=config.semantic_layer,
            decoder_only=config.trainable == "decoder",
            frozen_decoder=config.trainable == "encoder",
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
        betas = tuple(float(b) for b in config.betas)
        self.trainable_g = [p for p in generator.parameters() if p.requires_grad]  # decoder- and encoder-only runs freeze some
        opt_g = torch.optim.AdamW(self.trainable_g, lr=config.lr_generator, betas=betas, eps=config.eps,
                                  weight_decay=config.weight_decay)
        sched_g = lr_schedule(opt_g, config.lr_decay_gamma, config.lr_warmup_steps)
        opt_d = sched_d = None
        if discriminator is not None:
            opt_d = torch.optim.AdamW(discriminator.parameters(), lr=config.lr_discriminator, betas=betas,
                                      eps=config.eps, weight_decay=config.weight_decay)
            sched_d = lr_schedule(opt_d, config.lr_decay_gamma, config.lr_warmup_steps)
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
        self.accelerator.register_save_state_pre_hook(self._drop_rebuilt_weights)  # frozen tensors: not saved

    def _load_data(self, train_data, val_data, pad_multiple: int):
        """The training crops (`train_dataset`) and the validation clips (`val_clips`: `val_data`, or clips held
        out of the training data)."""
        config = self.config
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
        if self.train_dataset.crop_samples % pad_multiple:
            logger.info(
                "crop of %d samples is not a multiple of the codec's pad_multiple (%d): the codec pads each crop to %d.",
                self.train_dataset.crop_samples, pad_multiple,
                -(-self.train_dataset.crop_samples // pad_multiple) * pad_multiple,
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
        """Appends `record` to `log.jsonl` and sends its numbers (`tracker_scalars`, names prefixed by its `type`:
        `train/mel`, `eval/pesq_wb`) at its `step` to the accelerator's trackers; main process only."""
        if not self.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(json_safe(record)) + "\n")
        if self.accelerator.trackers:
            scalars = tracker_scalars(record, prefix=str(record.get("type", "")))
            if scalars:
                self.accelerator.log(scalars, step=record.get("step", self.step))

    # ---------------------------------------------------------------------------------------- experiment tracking

    def _start_tracking(self):
        """Starts the accelerator's trackers (`init_trackers(config.tracker_project, config.to_flat_dict(),
        config.tracker_init_kwargs)`) unless there are none or they were started by the caller; again at every
        `train` call, so a resumed run logs to the same project (TensorBoard: the same folder)."""
        accelerator = self.accelerator
        if accelerator.trackers or not accelerator.log_with:
            return
        accelerator.init_trackers(self.config.tracker_project, config=self.config.to_flat_dict(),
                                  init_kwargs=self.config.tracker_init_kwargs)
        self._started_trackers = True

    def _end_tracking(self):
        """Finishes the trackers `_start_tracking` started (what `accelerator.end_training()` does for them, without
        destroying the process group, which `evaluate`, `save_checkpoint` or a next `train` still need; the CLI
        calls `end_training()` when it is done). A tracker that fails to finish is reported with a warning, so it
        cannot hide an error of the run."""
        if not self._started_trackers:
            return
        self._started_trackers = False
        trackers, self.accelerator.trackers = list(self.accelerator.trackers), []
        for tracker in trackers:
            try:
                tracker.finish()
            except Exception as error:  # noqa: BLE001 - a tracker's own failure
                warnings.warn(f"The experiment tracker {getattr(tracker, 'name', tracker)!r} failed to finish: "
                              f"{type(error).__name__}: {error}")

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
                    outputs[id(teacher)] = teacher.features(_resampled(audio, self.sample_rate, teacher.sample_rate)).float()
            embedding = None
            if self.semantic_teacher is not None:
                embedding = self.semantic_teacher.embed(
                    _resampled(audio, self.sample_rate, self.semantic_teacher.sample_rate)
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
        if self.codec_teacher is not None:
            with torch.no_grad():
                target = self.codec_teacher(audio).audio_values
            losses["codec_teacher"] = self.mel_loss(reconstruction, target)
        if self.stft_loss is not None:
            losses["stft"] = self.stft_loss(reconstruction, audio)
        if self.stoi_loss is not None:
            losses["stoi"] = self.stoi_loss(reconstruction, audio)
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
        restores that state and continues exactly. The experiment trackers (`config.log_with`) are started before
        the first step and finished at the end, also when the time limit stops the run or an error does.

        Args:
            max_steps (`int`, *optional*): total steps to reach (default `config.max_steps`).
            resume (`bool` or `str`, *optional*, defaults to `False`): `True` for the `latest` checkpoint of
                `output_dir`, or a checkpoint folder.

        Returns:
            `dict`: the last logged training record (`{}` when there was nothing to do).
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
        self._fit_semantic_layer1()
        if self.step >= max_steps:
            logger.info("Already at step %d >= max_steps %d: nothing to do.", self.step, max_steps)
            return {}
        self._start_tracking()
        try:
            return self._train_loop(max_steps)
        finally:
            self._end_tracking()

    def _fit_semantic_layer1(self):
        """Fits a teacher-computed layer 1 whose centroids are still unfitted, on `config.semantic_fit_clips` clips
        of `config.semantic_fit_data` (default: the training data) drawn with the run's seed; a resumed run has them
        in its checkpoint already. A codec with grouped words whose centroids are fitted but whose groups are not gets
        its groups only (the centroids and words kept)."""
        codec, config = self.codec, self.config
        if codec.semantic is None:
            return
        if codec.semantic.is_fitted:
            first = codec.quantizer.layers[0]
            if first.word_heads is not None and not first.groups_fitted:
                heads = fit_layer1_groups(codec, seed=config.seed)
                logger.info("Fitted the layer-1 word groups around the codec's %d centroid words.", len(heads.unique()))
            return
        sources = (self.train_dataset.sources if config.semantic_fit_data is None else
                   resolve_sources(config.semantic_fit_data, config.audio_column, config.path_column))
        clips = draw_fit_clips(sources, config.semantic_fit_clips, config.seed)
        stats = fit_semantic_layer1(codec, clips, seed=config.seed, progress=config.progress and self.is_main)
        logger.info("Fitted the semantic layer 1 on %d windows of %d clips: %d of %d centroids used.",
                    stats["windows"], stats["clips"], stats["clusters_used"], codec.config.semantic_clusters)

    def _train_loop(self, max_steps: int) -> dict:
        """The steps of `train` from `self.step` to `max_steps`; returns the last logged training record."""
        config = self.config
        loader = make_dataloader(
            self.train_dataset, config.batch_size, seed=config.seed, start_step=self.step, end_step=max_steps,
            num_workers=config.num_workers, num_processes=self.accelerator.num_processes,
            process_index=self.accelerator.process_index,
        )
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
                values, clip_errors = speech_scores(clip[0, 0].cpu().numpy(), reconstruction[0, 0].cpu().numpy(),
                                                    self.sample_rate)
                values["mel_distance"] = float(self.mel_metric(reconstruction, clip))
                per_clip.append(values)
                for name, reason in clip_errors.items():
                    errors.setdefault(name, []).append(f"clip {index}: {reason}")
                if index == 0:
                    save_audio(folder / "reconstruction.wav", reconstruction[0].cpu(), self.sample_rate)
                    original = self.output_dir / "eval" / "original.wav"
                    if not original.exists():
                        save_audio(original, clip[0].cpu(), self.sample_rate)
                    plot_spectrograms({"original": clip[0, 0].cpu().numpy(),
                                       "reconstruction": reconstruction[0, 0].cpu().numpy()},
                                      self.sample_rate, folder / "spectrogram.png", f"(step {self.step})")
        finally:
            codec.train(was_training)
        metrics = {}
        for name in per_clip[0]:
            column = np.array([m[name] for m in per_clip], dtype=np.float64)
            metrics[name] = float(np.nanmean(column)) if np.isfinite(column).any() else float("nan")
        record = {"type": "eval", "step": self.step, **metrics, "num_clips": len(per_clip), "time": time.time()}
        if errors:
            record["errors"] = errors
        (folder / "metrics.json").write_text(json.dumps(json_safe({**record, "per_clip": per_clip}), indent=2))
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
        `keep_last`, and refreshes `model/` (the codec, weight norm folded, complete). The checkpoint leaves out the
        frozen tensors the trainer rebuilds from its config (the LM's codebooks, a semantic teacher's network: 0.24 GB
        for the SmolLM2 vocabulary); `trainer_state.json` records their sha256s, which `load_checkpoint` checks.
        """
        folder = self.output_dir / CHECKPOINTS / f"step_{self.step:08d}"
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(folder))  # without the rebuilt frozen tensors (`_drop_rebuilt_weights`)
        if self.is_main:
            state = {"step": self.step, "config": self.config.to_dict(), REBUILT_KEY: self._rebuilt_digests()}
            (folder / STATE_FILE).write_text(json.dumps(state, indent=2))
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
        """
        Restores a state written by `save_checkpoint` (weights, optimizers, schedulers, RNG, step). The frozen
        tensors a checkpoint leaves out (codebooks, a semantic teacher's network) are the ones this trainer rebuilt
        from its config; their sha256s, recorded at saving, must match, else a `RuntimeError` says what changed. Any
        other weight missing from the checkpoint is a `ValueError`.
        """
        from safetensors import safe_open

        folder = Path(folder)
        state = json.loads((folder / STATE_FILE).read_text())
        weights_file = folder / "model.safetensors"  # the generator's weights (accelerate's name for model 0)
        if not weights_file.is_file():
            raise FileNotFoundError(f"{folder} has no model.safetensors: not a checkpoint written by this trainer.")
        with safe_open(str(weights_file), "pt") as handle:
            saved = set(handle.keys())
        expected = set(self.accelerator.unwrap_model(self.generator).state_dict())
        missing = sorted(k for k in expected - saved if not is_rebuilt_weight(k))
        if missing:
            more = " ..." if len(missing) > 5 else ""
            raise ValueError(f"{folder} lacks weights of this run's model: {missing[:5]}{more}. It was written by "
                             "another configuration.")
        left_out = expected - saved
        recorded = state.get(REBUILT_KEY) or {}
        if left_out - set(recorded):
            raise ValueError(f"{folder} leaves out {sorted(left_out - set(recorded))[:3]} without recording them.")
        self.accelerator.load_state(str(folder), strict=False)  # the left-out tensors keep their rebuilt values
        current = self._rebuilt_digests(only=left_out)
        changed = sorted(k for k in left_out if current[k] != recorded[k])
        if changed:
            raise RuntimeError(
                f"{folder} was trained with other frozen tensors than this trainer rebuilt ({changed[:3]}): the LM "
                "of the codebooks or the teacher's weights changed since. Use the LM and teacher of that run."
            )
        self.step = int(state["step"])
        logger.info("Resumed from %s (step %d).", folder, self.step)

    def _rebuilt_digests(self, only: set[str] | None = None) -> dict[str, str]:
        """sha256 of the generator's rebuilt frozen tensors (`is_rebuilt_weight`), computed once and reused (they
        never change in training); `only`: a subset of their names."""
        if getattr(self, "_rebuilt_digest_cache", None) is None:
            state = self.accelerator.unwrap_model(self.generator).state_dict()
            self._rebuilt_digest_cache = {k: tensor_sha256(v) for k, v in state.items() if is_rebuilt_weight(k)}
        digests = self._rebuilt_digest_cache
        return digests if only is None else {k: digests[k] for k in only}

    @staticmethod
    def _drop_rebuilt_weights(models, weights, output_dir):
        """accelerate's save-state hook: leaves the rebuilt frozen tensors out of every saved state dict."""
        for state in weights:
            for name in [k for k in state if is_rebuilt_weight(k)]:
                del state[name]


def train(config: TrainingConfig, resume: bool | str = False, max_steps: int | None = None, **trainer_kwargs) -> Trainer:
    """Builds a `Trainer` from `config` (extra arguments go to it), trains, and returns it."""
    trainer = Trainer(config, **trainer_kwargs)
    trainer.train(max_steps=max_steps, resume=resume)
    return trainer


__all__ = ["TRACKER_PACKAGES", "Trainer", "check_trackers", "tracker_scalars", "train"]
