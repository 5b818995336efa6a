"""`TrainingConfig`: everything a training run needs, loadable from YAML or JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .discriminators import LLM_CODEC_HIDDEN_CHANNELS, LLM_CODEC_HOP_LENGTHS
from ..mel import DAC_MEL_BANDS, DAC_MEL_WINDOWS

DEFAULT_LOSS_WEIGHTS = {
    "mel": 15.0,  # multi-scale log-mel L1 (summed over the 7 scales, as DAC)
    "stft": 0.0,  # multi-scale STFT magnitude loss (off by default, as DAC)
    "stoi": 0.0,  # 1 - a differentiable STOI (`losses.STOILoss`), off by default
    "adversarial": 1.0,  # least-squares generator loss
    "feature_matching": 2.0,
    "commitment": 0.25,
    "codebook": 1.0,
    "consistency": 1.0,  # only used with a `consistency_teacher`
    "semantic": 1.0,  # only used with a semantic (clip) teacher passed to the Trainer
    "distill": 1.0,  # only used with a `distill_teacher` (frame-level semantic distillation into layer 1)
    "codec_teacher": 1.0,  # only used with a `codec_teacher` (mel loss between the output and the teacher codec's)
}


TRAINABLE = ("all", "decoder", "encoder")

# Lists longer than this are summarised ("<N items>") in `TrainingConfig.to_flat_dict` (the full config is in
# `training_config.yaml`; a 4000-word `word_list` is no hyperparameter to show in a dashboard).
FLAT_LIST_MAX_ITEMS = 64


def _merged(base: dict, override: dict) -> dict:
    """`base` updated by `override`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_config_values(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The key/values of a config file with its `base:` chain resolved (see `TrainingConfig.from_file`)."""
    if not path.is_file():
        raise FileNotFoundError(f"No training config at {path}.")
    if path.resolve() in seen:
        raise ValueError(f"Training config {path} is its own base (through {[str(p) for p in seen]}).")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of config keys.")
    base = values.pop("base", None)
    if base is None:
        return values
    return _merged(_read_config_values(path.parent / base, seen + (path.resolve(),)), values)


@dataclass
class TrainingConfig:
    """
    Configuration of a codec training run.

    Data:
        train_data (`str`, *optional*): folder of audio files, JSONL/CSV manifest with a `path_column`, or one file
            (a `datasets.Dataset` can be passed to the `Trainer` directly).
        val_data (`str`, *optional*): held-out audio (same forms); when absent, `num_val_clips` clips are held out of
            `train_data`.
        num_val_clips (`int`, defaults to 4): validation clips (held out, or the first ones of `val_data`).
        val_seconds (`float`, defaults to 4.0): first seconds of each validation clip used.
        audio_column (`str`, defaults to "audio"): audio column of a `datasets.Dataset`.
        path_column (`str`, defaults to "path"): path column of a manifest.
        crop_seconds (`float`, defaults to 1.0): training crop length (a multiple of the codec's `pad_multiple` /
            sample_rate, 0.24 s for the released architecture, avoids padding inside the codec).
        gain_db (`list[float]`, *optional*): random gain range `[low, high]` in dB.
        batch_size (`int`, defaults to 8): per process.
        num_workers (`int`, defaults to 0): data-loading worker processes (batches are the same for any number).

    Codec:
        codec (`dict`): `LLMCodecConfig` architecture arguments (encoder_dim, encoder_rates, decoder_dim, ...).
        lm (`str`, *optional*, defaults to "default"): the LM giving the codebooks: "default" (the offline
            SmolLM2-135M via `llm_codec.language_model.load_language_model()`) or a local transformers folder.
        word_list: layer-1 candidate words: `None` (the shipped list), 10 or 20 (SCOWL size of the shipped list),
            a text file with one word per line, or a list of words.
        max_subwords (`int`, defaults to 2), layer_subset (`None`, "no_special" or token ids): see
            `llm_codec.codebooks`.
        init_from (`str`, *optional*): start from a saved codec folder instead, or "default" for the shipped default
            codec (`codec`/`lm` are then ignored).
        semantic_teacher (`str`, *optional*): make layer 1 teacher-computed (`LLMCodecConfig.semantic_teacher`,
            "resemblyzer"); a starting codec without it keeps all its weights (`training.add_semantic_layer1`).
            Before the first step the centroids are fitted, if they are not yet, on `semantic_fit_clips` training
            clips (`training.fit_semantic_layer1`); layers 2-3 and the decoder then learn around the new layer 1.
        semantic_clusters (`int`, defaults to 16): the teacher's centroids, one layer-1 word each.
        semantic_groups (`bool`, defaults to `False`): the teacher chooses a group of layer-1 words and the encoder
            the word within it (`LLMCodecConfig.semantic_groups`; the groups are fitted with the centroids), so
            layer 1 keeps acoustic detail; `False`: the centroid's word is the code.
        semantic_fit_clips (`int`, defaults to 900): clips (first 8 s of each, drawn with `seed`) the centroids are
            fitted on, from `semantic_fit_data`.
        semantic_fit_data (*optional*): the audio to fit them on (a folder, manifest or list of paths, as
            `train_data`); default: the training data. The centroids split what they are fitted on: a set with as
            much of each kind of sound as the codec should tell apart (speech, notes, drum hits) gives each kind
            its own words, a speech-heavy one puts most non-speech sounds under one word.
        trainable (`str`, defaults to "all"): "all" trains encoder, VQ projections and decoder; "decoder" fine-tunes
            only the decoder: the encoder and quantizer are frozen and run without gradient, so every clip keeps
            exactly the codes of the initial codec (codes already stored or emitted by an LM stay valid); the VQ,
            consistency and semantic losses then have nothing to train and are skipped; "encoder" freezes the
            decoder instead: the encoder, VQ projections and teacher heads learn to give the unchanged decoder the
            latents it reconstructs best from (a changed layer 1, e.g. grouped words, without retraining the
            decoder that larger batches fitted).

    Optimisation:
        max_steps (`int`), time_limit_minutes (`float`, *optional*: stop, with a checkpoint, after this much
        wall-clock training time in one call; `--resume` continues), lr_generator / lr_discriminator (`float`, 2e-4), betas (`[0.8, 0.99]`), eps (1e-6),
        weight_decay (0.01, torch's AdamW default), lr_decay_gamma (per-step exponential decay, 0.999996 as DAC),
        lr_warmup_steps (0: the learning rates rise linearly from 0 over this many steps, then decay as set; eases
        a fresh optimiser into a trained codec, whose first Adam steps otherwise move every weight by about the
        learning rate),
        grad_clip_generator (1000, as DAC) / grad_clip_discriminator (10; `None` disables clipping),
        discriminator_start_step (adversarial losses start at this step), mixed_precision ("no", "fp16", "bf16"),
        seed.

    Losses:
        loss_weights (`dict`): see `DEFAULT_LOSS_WEIGHTS`; given keys replace the defaults.
        mel_window_lengths / mel_n_mels: the multi-scale mel loss scales; stft_window_lengths: the STFT loss scales.
        mel_low_band_hz (`float`, *optional*) / mel_low_band_weight (`float`, defaults to 1): weigh the mel loss's
            bands centred below this frequency this many times (e.g. 4000 and 2.0 to favour the speech band).
            `None` (default) weighs all bands alike, as DAC and the `mel_distance` metric do.
        consistency_teacher (`str`, *optional*): "whisper", "whisper:<CTranslate2 folder>", "whisper-30s" (see
            `teachers.load_teacher`) or `None`.
        consistency_layer (`int`, defaults to 1): 0-based VQ layer compared with the teacher (1 = layer 2).
        semantic_layer (`int`, defaults to 0): VQ layer of the semantic loss (layer 1).
        distill_teacher (`str`, *optional*): a frame teacher (the values of `consistency_teacher`, or
            `"resemblyzer"` for the speaker encoder, `"musicnn"` for the music tagger, see `teachers.load_teacher`)
            distilled, frame
            by frame, into the quantized vectors of `distill_layer`: the semantic first layer of SpeechTokenizer and
            Mimi (`teachers.distillation_loss`, weight `loss_weights["distill"]`). `None` (default) turns it off.
        distill_layer (`int`, defaults to 0): 0-based VQ layer made semantic (0 = layer 1).
        teacher_required (`bool`, defaults to `False`): fail, rather than warn and skip the loss, when the teacher
            cannot be loaded.
        codec_teacher (`str`, *optional*): a trained codec whose output the trained one also learns to match
            (output distillation): "default" for the shipped default codec, or a saved codec folder. Each step it
            encodes and decodes the same crops, frozen and in eval mode, and the multi-scale mel loss between the
            two outputs is added with weight `loss_weights["codec_teacher"]`. It is never saved in checkpoints.
            `None` (default) turns it off.

    Discriminator:
        disc_hop_lengths, disc_hidden_channels, disc_domain, disc_mel_scale: the multi-frequency discriminator.
        disc_periods (`list[int]`, *optional*): add a multi-period discriminator (e.g. [2, 3, 5, 7, 11]).
        disc_period_channels: its widths.

    Bookkeeping:
        output_dir (`str`), log_every, eval_every, save_every (steps; 0 disables), keep_last (checkpoints kept),
        progress (`bool`, tqdm bar).

    Experiment tracking (`log.jsonl` is always written; these add accelerate's trackers):
        log_with (`list[str]` or `str`, *optional*): accelerate tracker names, e.g. "tensorboard" (or
            `["tensorboard", "wandb"]`, "all" for every installed one); also "comet_ml", "mlflow", "aim", "clearml",
            "dvclive", "swanlab", "trackio" or a name registered with `accelerate.tracking.register_tracker_class`.
            A string may list several names separated by commas; "none" or `None` (default) turns tracking off.
            The trainer fails at start, before any step, on an unknown name or a tracker whose package is missing.
            Tracker objects (`accelerate.tracking.GeneralTracker`) go to `Trainer(log_with=...)` instead.
        tracker_project (`str`, defaults to "llm_codec"): the project name given to `accelerator.init_trackers`
            (TensorBoard writes under `output_dir/<tracker_project>/`; W&B, MLflow, ...: the project / experiment).
        tracker_init_kwargs (`dict[str, dict]`): keyword arguments per tracker for its start, as accelerate's
            `init_trackers(init_kwargs=...)`, e.g. `{"wandb": {"name": "run-1"}}` or
            `{"tensorboard": {"flush_secs": 30}}`.
    """

    # data
    train_data: str | None = None
    val_data: str | None = None
    num_val_clips: int = 4
    val_seconds: float = 4.0
    audio_column: str = "audio"
    path_column: str = "path"
    crop_seconds: float = 1.0
    gain_db: list[float] | None = None
    batch_size: int = 8
    num_workers: int = 0
    # codec
    codec: dict[str, Any] = field(default_factory=dict)
    lm: str | None = "default"
    word_list: Any = None
    max_subwords: int = 2
    layer_subset: Any = None
    init_from: str | None = None
    semantic_teacher: str | None = None
    semantic_clusters: int = 16
    semantic_groups: bool = False
    semantic_fit_clips: int = 900
    semantic_fit_data: Any = None
    trainable: str = "all"
    # optimisation
    max_steps: int = 100000
    time_limit_minutes: float | None = None
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    eps: float = 1e-6
    weight_decay: float = 0.01
    lr_decay_gamma: float = 0.999996
    lr_warmup_steps: int = 0
    grad_clip_generator: float | None = 1000.0
    grad_clip_discriminator: float | None = 10.0
    discriminator_start_step: int = 0
    mixed_precision: str = "no"
    seed: int = 0
    # losses
    loss_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))
    mel_window_lengths: list[int] = field(default_factory=lambda: list(DAC_MEL_WINDOWS))
    mel_n_mels: list[int] = field(default_factory=lambda: list(DAC_MEL_BANDS))
    stft_window_lengths: list[int] = field(default_factory=lambda: [2048, 512])
    mel_low_band_hz: float | None = None
    mel_low_band_weight: float = 1.0
    consistency_teacher: str | None = None
    consistency_layer: int = 1
    semantic_layer: int = 0
    distill_teacher: str | None = None
    distill_layer: int = 0
    teacher_required: bool = False
    codec_teacher: str | None = None
    # discriminator
    disc_hop_lengths: list[int] = field(default_factory=lambda: list(LLM_CODEC_HOP_LENGTHS))
    disc_hidden_channels: list[int] = field(default_factory=lambda: list(LLM_CODEC_HIDDEN_CHANNELS))
    disc_domain: str = "double"
    disc_mel_scale: bool = True
    disc_periods: list[int] | None = None
    disc_period_channels: list[int] = field(default_factory=lambda: [32, 128, 512, 1024, 1024])
    # bookkeeping
    output_dir: str = "outputs/llm_codec"
    log_every: int = 10
    eval_every: int = 500
    save_every: int = 1000
    keep_last: int = 3
    progress: bool = True
    # experiment tracking (accelerate)
    log_with: list[str] | str | None = None
    tracker_project: str = "llm_codec"
    tracker_init_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        weights = dict(DEFAULT_LOSS_WEIGHTS)
        unknown = sorted(set(self.loss_weights or {}) - set(weights))
        if unknown:
            raise ValueError(f"Unknown loss weights {unknown}; known: {sorted(weights)}.")
        weights.update({k: float(v) for k, v in (self.loss_weights or {}).items()})
        self.loss_weights = weights
        if self.trainable not in TRAINABLE:
            raise ValueError(f"`trainable` must be one of {list(TRAINABLE)}, got {self.trainable!r}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"`mixed_precision` must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}.")
        if int(self.num_workers) < 0:
            raise ValueError(f"`num_workers` must be 0 or more, got {self.num_workers}.")
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise ValueError(f"`time_limit_minutes` must be positive (or null), got {self.time_limit_minutes}.")
        if int(self.lr_warmup_steps) < 0:
            raise ValueError(f"`lr_warmup_steps` must be 0 or more, got {self.lr_warmup_steps}.")
        for name in ("batch_size", "max_steps", "keep_last"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}.")
        if self.crop_seconds <= 0:
            raise ValueError(f"`crop_seconds` must be positive, got {self.crop_seconds}.")
        if len(self.mel_window_lengths) != len(self.mel_n_mels):
            raise ValueError("`mel_window_lengths` and `mel_n_mels` need the same number of entries.")
        if self.mel_low_band_weight <= 0:
            raise ValueError(f"`mel_low_band_weight` must be positive, got {self.mel_low_band_weight}.")
        if self.mel_low_band_hz is not None and not float(self.mel_low_band_hz) > 0:
            raise ValueError(f"`mel_low_band_hz` must be a positive frequency in Hz, got {self.mel_low_band_hz}.")
        if self.mel_low_band_weight != 1.0 and self.mel_low_band_hz is None:
            raise ValueError("`mel_low_band_weight` needs `mel_low_band_hz`, the frequency below which it applies.")
        if self.gain_db is not None and len(self.gain_db) != 2:
            raise ValueError(f"`gain_db` must be [low, high] in dB, got {self.gain_db!r}.")
        if self.codec_teacher is not None and not (isinstance(self.codec_teacher, str) and self.codec_teacher.strip()):
            raise ValueError(f"`codec_teacher` must be 'default' or a codec folder, got {self.codec_teacher!r}.")
        if self.codec_teacher is not None and self.loss_weights["codec_teacher"] <= 0:
            raise ValueError("`codec_teacher` is set but `loss_weights.codec_teacher` is not positive: give it a "
                             "weight, or drop `codec_teacher`.")
        self.codec = dict(self.codec or {})
        self.log_with = _tracker_names(self.log_with)
        if not isinstance(self.tracker_project, str) or not self.tracker_project.strip():
            raise ValueError(f"`tracker_project` must be a non-empty string, got {self.tracker_project!r}.")
        init_kwargs = self.tracker_init_kwargs or {}
        if not isinstance(init_kwargs, dict) or not all(isinstance(v, dict) for v in init_kwargs.values()):
            raise ValueError("`tracker_init_kwargs` must map tracker names to mappings of keyword arguments, e.g. "
                             f"{{'wandb': {{'name': 'run-1'}}}}; got {init_kwargs!r}.")
        self.tracker_init_kwargs = {str(k): dict(v) for k, v in init_kwargs.items()}

    # ------------------------------------------------------------------------------------------------ (de)serialise

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-ready dict of all fields."""
        return dataclasses.asdict(self)

    def to_flat_dict(self) -> dict[str, str | int | float | bool | None]:
        """
        The config as experiment trackers take hyperparameters (`accelerator.init_trackers(config=...)`): one level
        of keys with `str`, `int`, `float`, `bool` or `None` values. Mappings are flattened with "/"
        (`loss_weights/mel`, `codec/encoder_dim`; an empty one is the text "{}"), lists are JSON text
        (`"[0.8, 0.99]"`; over `FLAT_LIST_MAX_ITEMS` entries, `"<N items>"`), non-finite floats are text ("nan").

        Returns:
            `dict[str, str | int | float | bool | None]`.
        """
        flat: dict[str, str | int | float | bool | None] = {}
        _flatten_into(flat, "", self.to_dict())
        return flat

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainingConfig":
        """Builds a config from a dict; unknown keys raise `ValueError` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown training config keys {unknown}.")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainingConfig":
        """
        Reads a `.yaml`/`.yml` or `.json` file. A `base: other.yaml` key (relative to the file) starts from that
        file's values; the keys given here replace the base's, mappings (`codec`, `loss_weights`) key by key.
        """
        return cls.from_dict(_read_config_values(Path(path), seen=()))

    def replace(self, **changes) -> "TrainingConfig":
        """A copy with the fields of `changes` set to their values (`None` included: it clears a field)."""
        values = self.to_dict()
        values.update(changes)
        return self.from_dict(values)

    def save(self, path: str | Path) -> Path:
        """Writes the config as YAML (`.yaml`/`.yml`) or JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path


def _tracker_names(value) -> list[str] | None:
    """`log_with` as a list of tracker names (`None` for none): a string is split at commas, "none" drops out."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"`log_with` must be a tracker name, a list of names or null, got {value!r}.")
    names = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(
                f"`log_with` holds tracker names (str), got {item!r}: pass tracker objects (accelerate "
                "`GeneralTracker` instances) to `Trainer(config, log_with=[...])`, they cannot be saved in a config."
            )
        for name in item.split(","):
            name = name.strip()
            if name and name.lower() != "none" and name not in names:
                names.append(name)
    return names or None


def _flatten_into(flat: dict, prefix: str, value):
    """Adds `value` to `flat` under `prefix` (see `TrainingConfig.to_flat_dict`)."""
    if isinstance(value, dict):
        if not value and prefix:
            flat[prefix] = "{}"
        for key, item in value.items():
            _flatten_into(flat, f"{prefix}/{key}" if prefix else str(key), item)
    elif isinstance(value, (list, tuple)):
        flat[prefix] = (f"<{len(value)} items>" if len(value) > FLAT_LIST_MAX_ITEMS
                        else json.dumps(list(value), default=str))
    elif isinstance(value, float) and not math.isfinite(value):
        flat[prefix] = str(value)
    elif value is None or isinstance(value, (str, bool, int, float)):
        flat[prefix] = value
    else:
        flat[prefix] = str(value)


__all__ = ["DEFAULT_LOSS_WEIGHTS", "TrainingConfig"]
