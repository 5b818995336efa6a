"""LLM-Codec: a neural audio codec whose residual-VQ codebooks are frozen LLM embedding tables.

Encoder: convolution + residual blocks (Snake activations) down-sampling 16 kHz audio by `hop_length`, then a
local (windowed) self-attention. Quantizer: three residual VQ layers that average-pool the latent by
`vq_strides` (4, 2, 1), look up the nearest codebook vector after projecting the frozen codebook into the latent
space with a learned linear layer (cosine similarity), and repeat the result back to the frame rate. Decoder: the
mirror image with transposed convolutions and optional multiplicative noise.

Weights are stored without weight norm (as in transformers' DAC); call `apply_weight_norm()` before training and
`remove_weight_norm()` before saving.
"""

import math
import os
import tempfile
from dataclasses import dataclass

import huggingface_hub
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .codebooks import build_codec_from_language_model
from .configuration_llm_codec import LLMCodecConfig
from .feature_extraction_llm_codec import LLMCodecFeatureExtractor
from .model_card import build_model_card
from .pipeline_llm_codec import custom_pipelines  # relative, so save_pretrained copies the pipeline code too
from .voice_encoder import (
    RESEMBLYZER_HOP_LENGTH,
    RESEMBLYZER_SAMPLE_RATE,
    ResemblyzerMel,
    ResemblyzerVoiceEncoder,
    embed_partials,
    load_resemblyzer_state_dict,
)


@dataclass
class LLMCodecEncoderOutput(ModelOutput):
    """
    Output of [`LLMCodecModel.encode`].

    Args:
        audio_codes (`tuple[torch.LongTensor]`): one `(batch, frames / vq_strides[k])` tensor per VQ layer `k`.
        audio_codes_lengths (`torch.LongTensor` of shape `(batch, num_quantizers)`): valid codes of each item and
            layer (the rest belongs to batch padding).
        audio_lengths (`torch.LongTensor` of shape `(batch,)`): valid samples of each input, for trimming in `decode`.
        quantized_representation (`torch.FloatTensor` of shape `(batch, latent_dim, frames)`, *optional*): sum of
            the quantized vectors of all layers (what the decoder consumes).
        commitment_loss (`torch.FloatTensor`, *optional*): commitment loss (training only).
        codebook_loss (`torch.FloatTensor`, *optional*): codebook loss (training only).
    """

    audio_codes: tuple[torch.LongTensor, ...] | None = None
    audio_codes_lengths: torch.LongTensor | None = None
    audio_lengths: torch.LongTensor | None = None
    quantized_representation: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None


@dataclass
class LLMCodecDecoderOutput(ModelOutput):
    """
    Output of [`LLMCodecModel.decode`].

    Args:
        audio_values (`torch.FloatTensor` of shape `(batch, 1, samples)`): decoded audio; trimmed to the original
            lengths (zeros past each item's end) when they are known.
        padding_mask (`torch.LongTensor` of shape `(batch, samples)`, *optional*): 1 for valid samples.
    """

    audio_values: torch.FloatTensor | None = None
    padding_mask: torch.LongTensor | None = None


@dataclass
class LLMCodecOutput(ModelOutput):
    """
    Output of [`LLMCodecModel.forward`].

    Args:
        loss (`torch.FloatTensor`, *optional*): `commitment_loss_weight * commitment + codebook_loss_weight *
            codebook` loss (training only; reconstruction and adversarial losses live in `llm_codec.training`).
        audio_values (`torch.FloatTensor` of shape `(batch, 1, samples)`): reconstruction, trimmed to the input length.
        audio_codes (`tuple[torch.LongTensor]`): one `(batch, frames / vq_strides[k])` tensor per VQ layer.
        audio_codes_lengths (`torch.LongTensor` of shape `(batch, num_quantizers)`): valid codes per item and layer.
        quantized_representation (`torch.FloatTensor` of shape `(batch, latent_dim, frames)`): decoder input.
        commitment_loss (`torch.FloatTensor`, *optional*): commitment loss (training only).
        codebook_loss (`torch.FloatTensor`, *optional*): codebook loss (training only).
    """

    loss: torch.FloatTensor | None = None
    audio_values: torch.FloatTensor | None = None
    audio_codes: tuple[torch.LongTensor, ...] | None = None
    audio_codes_lengths: torch.LongTensor | None = None
    quantized_representation: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None


class LLMCodecSnake1d(nn.Module):
    """Snake activation `x + sin(alpha * x)**2 / alpha` with one learned `alpha` per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`hidden_states`: (batch, channels, time) -> same shape."""
        alpha = self.alpha
        if torch.is_grad_enabled() and (hidden_states.requires_grad or alpha.requires_grad):
            return hidden_states + (alpha + 1e-9).reciprocal() * torch.sin(alpha * hidden_states).pow(2)
        # Inference: the same arithmetic in one temporary buffer (the activation is memory-bound at audio rate).
        out = torch.mul(hidden_states, alpha)
        out.sin_().square_().mul_((alpha + 1e-9).reciprocal())
        return out.add_(hidden_states)


class LLMCodecResidualUnit(nn.Module):
    """Snake -> dilated convolution (kernel 7) -> Snake -> 1x1 convolution, plus the input."""

    def __init__(self, dim: int, dilation: int, groups: int, kernel_size: int = 7):
        super().__init__()
        padding = (kernel_size - 1) * dilation // 2
        self.snake1 = LLMCodecSnake1d(dim)
        self.conv1 = nn.Conv1d(dim, dim, kernel_size, dilation=dilation, padding=padding, groups=groups)
        self.snake2 = LLMCodecSnake1d(dim)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`hidden_states`: (batch, dim, time) -> same shape."""
        residual = hidden_states
        hidden_states = self.conv1(self.snake1(hidden_states))
        hidden_states = self.conv2(self.snake2(hidden_states))
        return residual + hidden_states


class LLMCodecEncoderBlock(nn.Module):
    """Three residual units (dilations 1, 3, 9) then a strided convolution that doubles the channels."""

    def __init__(self, input_dim: int, output_dim: int, stride: int, groups: int):
        super().__init__()
        self.res_unit1 = LLMCodecResidualUnit(input_dim, dilation=1, groups=groups)
        self.res_unit2 = LLMCodecResidualUnit(input_dim, dilation=3, groups=groups)
        self.res_unit3 = LLMCodecResidualUnit(input_dim, dilation=9, groups=groups)
        self.snake = LLMCodecSnake1d(input_dim)
        self.conv = nn.Conv1d(input_dim, output_dim, 2 * stride, stride=stride, padding=math.ceil(stride / 2))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`hidden_states`: (batch, input_dim, time) -> (batch, output_dim, time / stride)."""
        hidden_states = self.res_unit3(self.res_unit2(self.res_unit1(hidden_states)))
        return self.conv(self.snake(hidden_states))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class LLMCodecLocalAttention(nn.Module):
    """
    Pre-norm multi-head self-attention inside non-overlapping windows of `window_size` frames, with rotary position
    embeddings restarting at every window; the output is added to the input.
    """

    def __init__(self, dim: int, window_size: int, head_dim: int):
        super().__init__()
        self.window_size = window_size
        self.head_dim = head_dim
        self.num_heads = dim // head_dim
        self.norm = nn.LayerNorm(dim)
        self.qkv_proj = nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def rotary_angles(self, device: torch.device) -> torch.Tensor:
        """Rotary angles `(window_size, head_dim)` of positions 0..window_size-1 (float32)."""
        inv_freq = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
        positions = torch.arange(self.window_size, device=device, dtype=torch.float32)
        angles = positions[:, None] * inv_freq[None, :]
        return torch.cat((angles, angles), dim=-1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`hidden_states`: (batch, dim, time), time a multiple of `window_size` -> same shape."""
        batch, dim, length = hidden_states.shape
        if length % self.window_size:
            raise ValueError(
                f"Local attention needs a multiple of {self.window_size} frames, got {length}. Encode through "
                "`LLMCodecModel.encode` (it pads) or give codes whose frame count is a multiple of the window."
            )
        windows = length // self.window_size
        residual = hidden_states
        hidden_states = self.norm(hidden_states.transpose(1, 2))
        qkv = self.qkv_proj(hidden_states).view(batch, windows, self.window_size, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # each (batch, heads, windows, window, head_dim)
        angles = self.rotary_angles(hidden_states.device)
        cos, sin = angles.cos().to(query.dtype), angles.sin().to(query.dtype)
        query = query * cos + _rotate_half(query) * sin
        key = key * cos + _rotate_half(key) * sin
        scores = (query @ key.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        attended = scores.softmax(dim=-1) @ value
        attended = attended.permute(0, 2, 3, 1, 4).reshape(batch, length, dim)
        return self.out_proj(attended).transpose(1, 2) + residual


class LLMCodecEncoder(nn.Module):
    """Audio (batch, 1, samples) -> latent (batch, latent_dim, samples / hop_length)."""

    def __init__(self, config: LLMCodecConfig):
        super().__init__()
        dim = config.encoder_dim
        self.conv_in = nn.Conv1d(1, dim, kernel_size=7, padding=3)
        blocks = []
        for stride in config.encoder_rates:
            groups = dim if config.depthwise else 1
            blocks.append(LLMCodecEncoderBlock(dim, 2 * dim, stride, groups))
            dim *= 2
        self.blocks = nn.ModuleList(blocks)
        self.attention = (
            LLMCodecLocalAttention(dim, config.attn_window_size, config.attn_head_dim)
            if config.attn_window_size is not None
            else None
        )
        self.conv_out = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim if config.depthwise else 1)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """`input_values`: (batch, 1, samples), samples a multiple of `config.pad_multiple` -> (batch, dim, frames)."""
        hidden_states = self.conv_in(input_values)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        if self.attention is not None:
            hidden_states = self.attention(hidden_states)
        return self.conv_out(hidden_states)


class LLMCodecNoiseBlock(nn.Module):
    """Adds `noise * conv(x)` where `noise ~ N(0, 1)` has shape (batch, 1, time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size=1, bias=False)

    @staticmethod
    def draw(hidden_states: torch.Tensor, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise (batch, 1, length) in the dtype and device of `hidden_states` (the original's single draw)."""
        shape = (hidden_states.shape[0], 1, length)
        return torch.randn(shape, device=hidden_states.device, dtype=hidden_states.dtype, generator=generator)

    def forward(self, hidden_states: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """`hidden_states`: (batch, dim, time), `noise`: (batch, 1, time) -> (batch, dim, time)."""
        return hidden_states + noise * self.conv(hidden_states)


class LLMCodecDecoderBlock(nn.Module):
    """
    Snake -> transposed convolution (up-sample by `stride`, halve channels) -> noise -> three residual units.

    Without gradient, long inputs are processed in overlapping time tiles of about `tile_samples` output samples
    (the activations then stay in the CPU cache). Tiles overlap by more than the block's receptive field and the
    noise is drawn once for the whole output, so the result equals the untiled computation.
    """

    tile_samples = 16384

    def __init__(self, input_dim: int, output_dim: int, stride: int, noise: bool, groups: int):
        super().__init__()
        self.stride = stride
        self.snake = LLMCodecSnake1d(input_dim)
        self.conv_t = nn.ConvTranspose1d(
            input_dim,
            output_dim,
            kernel_size=2 * stride,
            stride=stride,
            padding=math.ceil(stride / 2),
            output_padding=stride % 2,
        )
        self.noise = LLMCodecNoiseBlock(output_dim) if noise else None
        self.res_unit1 = LLMCodecResidualUnit(output_dim, dilation=1, groups=groups)
        self.res_unit2 = LLMCodecResidualUnit(output_dim, dilation=3, groups=groups)
        self.res_unit3 = LLMCodecResidualUnit(output_dim, dilation=9, groups=groups)
        # Output samples on each side that depend on inputs outside a tile: the transposed convolution's reach
        # (2 * stride) plus the residual units' (3 * (1 + 3 + 9)), in input frames, plus one frame of slack.
        self.halo_frames = math.ceil((2 * stride + 3 * (1 + 3 + 9)) / stride) + 1

    def _block(self, hidden_states: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        hidden_states = self.conv_t(self.snake(hidden_states))
        if self.noise is not None:
            hidden_states = self.noise(hidden_states, noise)
        return self.res_unit3(self.res_unit2(self.res_unit1(hidden_states)))

    def forward(self, hidden_states: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """
        `hidden_states`: (batch, input_dim, time) -> (batch, output_dim, time * stride). `noise` (batch, 1,
        time * stride): the noise block's draw (`LLMCodecNoiseBlock.draw`, done by the decoder for every block up
        front), `None` when the block has no noise.
        """
        frames = hidden_states.shape[-1]
        out_length = frames * self.stride
        tile = max(1, self.tile_samples // self.stride)
        if torch.is_grad_enabled() or frames <= 2 * tile:
            return self._block(hidden_states, noise)
        output = None
        for start in range(0, frames, tile):
            end = min(frames, start + tile)
            lo, hi = max(0, start - self.halo_frames), min(frames, end + self.halo_frames)
            tile_noise = noise[..., lo * self.stride : hi * self.stride] if noise is not None else None
            result = self._block(hidden_states[..., lo:hi], tile_noise)
            if output is None:
                output = result.new_empty(result.shape[0], result.shape[1], out_length)
            offset = (start - lo) * self.stride
            output[..., start * self.stride : end * self.stride] = result[..., offset : offset + (end - start) * self.stride]
        return output


class LLMCodecDecoder(nn.Module):
    """Latent (batch, latent_dim, frames) -> audio (batch, 1, frames * hop_length) in [-1, 1]."""

    def __init__(self, config: LLMCodecConfig):
        super().__init__()
        latent, dim = config.latent_dim, config.decoder_dim
        if config.depthwise:
            self.conv_in_depthwise = nn.Conv1d(latent, latent, kernel_size=7, padding=3, groups=latent)
            self.conv_in = nn.Conv1d(latent, dim, kernel_size=1)
        else:
            self.conv_in_depthwise = None
            self.conv_in = nn.Conv1d(latent, dim, kernel_size=7, padding=3)
        self.attention = (
            LLMCodecLocalAttention(dim, config.attn_window_size, config.attn_head_dim)
            if config.attn_window_size is not None
            else None
        )
        blocks = []
        for stride in config.decoder_rates:
            groups = dim // 2 if config.depthwise else 1
            blocks.append(LLMCodecDecoderBlock(dim, dim // 2, stride, config.noise, groups))
            dim //= 2
        self.blocks = nn.ModuleList(blocks)
        self.snake_out = LLMCodecSnake1d(dim)
        self.conv_out = nn.Conv1d(dim, 1, kernel_size=7, padding=3)

    def halo_frames(self) -> int:
        """
        Latent frames on each side of a chunk that reach its output: the input convolution's, each block's halo
        (in its own input frames) brought back to latent frames, and the output convolution's, rounded up to whole
        attention windows so that chunks keep the windows of the whole sequence.
        """
        reach, scale = 3 if self.conv_in_depthwise is not None or self.conv_in.kernel_size[0] > 1 else 0, 1
        for block in self.blocks:
            reach += math.ceil(block.halo_frames / scale)
            scale *= block.stride
        reach += math.ceil(3 / scale) + 1
        window = self.attention.window_size if self.attention is not None else 1
        return math.ceil(reach / window) * window

    def _run(self, hidden_states: torch.Tensor, noises: list) -> torch.Tensor:
        if self.conv_in_depthwise is not None:
            hidden_states = self.conv_in_depthwise(hidden_states)
        hidden_states = self.conv_in(hidden_states)
        if self.attention is not None:
            hidden_states = self.attention(hidden_states)
        for block, noise in zip(self.blocks, noises):
            hidden_states = block(hidden_states, noise)
        return torch.tanh(self.conv_out(self.snake_out(hidden_states)))

    def forward(self, hidden_states: torch.Tensor, generator: torch.Generator | None = None,
                chunk_frames: int | None = None, progress: bool = False) -> torch.Tensor:
        """
        `hidden_states`: (batch, latent_dim, frames) -> (batch, 1, frames * hop_length).

        Without gradient and with `chunk_frames` (a multiple of the attention window), sequences longer than two
        chunks are decoded chunk by chunk with `halo_frames()` of overlap; every noise block's noise is drawn
        first, in the order of the whole-sequence decode, so the audio is the same and memory is bounded by a chunk
        plus the output and its noise (about 2.5 floats per output sample). `progress`: a tqdm bar (on standard
        error) over the chunks.
        """
        frames, noises, length = hidden_states.shape[-1], [], hidden_states.shape[-1]
        for block in self.blocks:  # the same draws, in the same order, as block-by-block decoding
            length *= block.stride
            noises.append(block.noise.draw(hidden_states, length, generator) if block.noise is not None else None)
        if chunk_frames is None or torch.is_grad_enabled() or frames <= 2 * chunk_frames:
            return self._run(hidden_states, noises)
        window = self.attention.window_size if self.attention is not None else 1
        if chunk_frames % window:
            raise ValueError(f"`chunk_frames` ({chunk_frames}) must be a multiple of the attention window ({window}).")
        hop, halo = length // frames, self.halo_frames()
        output = hidden_states.new_empty(hidden_states.shape[0], 1, length)
        for start in tqdm(range(0, frames, chunk_frames), desc="Decoding", unit="chunk", disable=not progress,
                          leave=False):
            end = min(frames, start + chunk_frames)
            lo, hi = max(0, start - halo), min(frames, end + halo)
            chunk_noises, scale = [], 1
            for block, noise in zip(self.blocks, noises):
                scale *= block.stride
                chunk_noises.append(noise[..., lo * scale : hi * scale] if noise is not None else None)
            audio = self._run(hidden_states[..., lo:hi], chunk_noises)
            output[..., start * hop : end * hop] = audio[..., (start - lo) * hop : (end - lo) * hop]
        return output


class LLMCodecVectorQuantize(nn.Module):
    """
    One VQ layer. Pools the latent by `stride`, picks for every pooled frame the codebook entry of highest cosine
    similarity in the latent space, and repeats the chosen (un-normalised) vectors `stride` times.

    The codebook is a frozen buffer (an LLM embedding table). With `use_cblinear` the codebook is projected into the
    latent space by `codebook_proj` (Linear codebook_dim -> latent_dim); the projected, L2-normalised table is cached
    and only recomputed when the codebook or the projection changes (tracked through tensor versions).

    Layer 1 of a codec with `config.semantic_groups` also holds the frozen buffer `word_heads` `(codebook_size,)`: the
    head word of each word's group (-1 until fitted). Codes given to `forward` are then group heads, and the layer
    picks, at each position, the nearest word whose head is the given one.
    """

    lookup_block_frames = 1024  # frames scored against the codebook at once (bounds the similarity matrix)

    def __init__(self, config: LLMCodecConfig, layer_idx: int):
        super().__init__()
        self.stride = config.vq_strides[layer_idx]
        self.codebook_size = config.codebook_sizes[layer_idx]
        self.use_cblinear = config.use_cblinear
        self.register_buffer("codebook", torch.zeros(self.codebook_size, config.codebook_dim))
        if config.use_cblinear:
            self.codebook_proj = nn.Linear(config.codebook_dim, config.latent_dim)
        else:
            self.in_proj = nn.Conv1d(config.latent_dim, config.codebook_dim, kernel_size=1)
            self.out_proj = nn.Conv1d(config.codebook_dim, config.latent_dim, kernel_size=1)
        if config.semantic_groups and layer_idx == 0:
            self.register_buffer("word_heads", torch.full((self.codebook_size,), -1, dtype=torch.long))
        else:
            self.word_heads = None
        self._cache_key = None
        self._cache = None

    def _tensors_defining_table(self) -> list[torch.Tensor]:
        if self.use_cblinear:
            return [self.codebook, self.codebook_proj.weight, self.codebook_proj.bias]
        return [self.codebook]

    def search_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """
        The table searched by the lookup, in float32, without gradient: `(table (codebook_size, dim), inv_norm
        (codebook_size,))`. Cached until a defining tensor is modified, moved or replaced.
        """
        key = tuple((t.data_ptr(), t._version, t.device, t.dtype, t.shape) for t in self._tensors_defining_table())
        if self._cache_key != key:
            with torch.no_grad():
                codebook = self.codebook.float()
                if self.use_cblinear:
                    table = F.linear(codebook, self.codebook_proj.weight.float(), self.codebook_proj.bias.float())
                else:
                    table = codebook
                inv_norm = table.norm(dim=1).clamp_min(1e-12).reciprocal()
            self._cache, self._cache_key = (table, inv_norm), key
        return self._cache

    def clear_cache(self):
        self._cache_key = self._cache = None

    def lookup(self, latents: torch.Tensor, heads: torch.LongTensor | None = None) -> torch.LongTensor:
        """
        `latents`: (batch, dim, frames) in the search space -> nearest entries by cosine, (batch, frames).
        `heads` (batch, frames), *optional* (a layer with `word_heads`): search each frame among the words of the
        given head's group only.
        """
        table, inv_norm = self.search_table()
        batch, dim, frames = latents.shape
        flat = latents.detach().transpose(1, 2).reshape(-1, dim).float()
        flat = F.normalize(flat, dim=1)
        flat_heads = heads.reshape(-1) if heads is not None else None
        codes = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
        for start in range(0, flat.shape[0], self.lookup_block_frames):
            block = flat[start : start + self.lookup_block_frames]
            scores = (block @ table.t()) * inv_norm
            if flat_heads is not None:
                outside = self.word_heads[None, :] != flat_heads[start : start + block.shape[0], None]
                scores = scores.masked_fill(outside, float("-inf"))
            codes[start : start + block.shape[0]] = scores.argmax(dim=1)
        return codes.view(batch, frames)

    @property
    def groups_fitted(self) -> bool:
        """Whether this layer's word groups (`word_heads`) are fitted (an unfitted layer holds -1)."""
        return self.word_heads is not None and bool((self.word_heads >= 0).all())

    def check_heads(self, heads: torch.LongTensor) -> None:
        """`heads` (any shape): raises a `RuntimeError` if the partition was never fitted, a `ValueError` if a code
        of `heads` heads no group."""
        if not self.groups_fitted:
            raise RuntimeError(
                "This codec's layer-1 word groups were never fitted (`quantizer.layers.0.word_heads` holds -1). Fit "
                "them with llm_codec.training.fit_semantic_layer1(codec, clips), or train with a config that sets "
                "`semantic_groups: true` (the trainer fits them first)."
            )
        is_head = torch.zeros(self.codebook_size, dtype=torch.bool, device=heads.device)
        is_head[self.word_heads.to(heads.device)] = True
        inside = (heads >= 0) & (heads < self.codebook_size)
        if not bool(inside.all()) or not bool(is_head[heads[inside]].all()):
            raise ValueError("Given layer-1 group heads include a word that heads no group of `word_heads`.")

    def embed(self, codes: torch.LongTensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """
        `codes`: (batch, time) -> codebook vectors in the latent space, (batch, latent_dim, time). Gathers the rows
        first and projects only those.
        """
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"Code {int(codes.min()) if int(codes.min()) < 0 else int(codes.max())} is outside this layer's "
                f"codebook (0..{self.codebook_size - 1}). Check the layer order of `audio_codes`."
            )
        rows = F.embedding(codes, self.codebook)
        if dtype is not None:
            rows = rows.to(dtype)
        if self.use_cblinear:
            return self.codebook_proj(rows).transpose(1, 2)
        return self.out_proj(rows.transpose(1, 2))

    def forward(self, residual: torch.Tensor, codes: torch.LongTensor | None = None):
        """
        `residual`: (batch, latent_dim, frames), frames a multiple of `stride` ->
        `(quantized (batch, latent_dim, frames), codes (batch, frames / stride), commitment_loss, codebook_loss)`.
        The quantized output carries the straight-through gradient; the losses are per item, shape (batch,).
        `codes` (batch, frames / stride), *optional*: use these entries instead of the nearest ones (a
        teacher-computed layer). The output is then the projected entries themselves, with no straight-through
        gradient to `residual` and a zero commitment loss (the encoder does not choose these codes); the codebook
        loss still pulls the projection towards the latent. In a layer with `word_heads`, the given codes are group
        heads instead: the nearest word of each head's group is chosen, with the usual straight-through gradient and
        losses.
        """
        pooled = F.avg_pool1d(residual, self.stride, self.stride) if self.stride > 1 else residual
        search_input = pooled if self.use_cblinear else self.in_proj(pooled)
        if codes is not None and tuple(codes.shape) != (pooled.shape[0], pooled.shape[-1]):
            raise ValueError(f"Given codes of shape {tuple(codes.shape)} for {pooled.shape[-1]} pooled frames of a "
                             f"batch of {pooled.shape[0]}.")
        given = None  # codes the encoder did not choose
        if codes is None:
            codes = self.lookup(search_input)
        elif self.word_heads is not None:  # group heads: the latent chooses within the group
            self.check_heads(codes)
            codes = self.lookup(search_input, heads=codes)
        else:
            given = codes
        if self.use_cblinear:
            quantized = self.codebook_proj(F.embedding(codes, self.codebook).to(pooled.dtype)).transpose(1, 2)
        else:
            quantized = F.embedding(codes, self.codebook).to(pooled.dtype).transpose(1, 2)
        commitment_loss = codebook_loss = None
        if self.training:
            codebook_loss = F.mse_loss(quantized, search_input.detach(), reduction="none").mean([1, 2])
            if given is None:
                commitment_loss = F.mse_loss(search_input, quantized.detach(), reduction="none").mean([1, 2])
                quantized = search_input + (quantized - search_input).detach()
            else:  # codes the encoder did not choose: no commitment to them, and no straight-through path; the
                # reconstruction trains the projection of the given words directly
                commitment_loss = codebook_loss.new_zeros(codebook_loss.shape)
        if not self.use_cblinear:
            quantized = self.out_proj(quantized)
        if self.stride > 1:
            quantized = quantized.repeat_interleave(self.stride, dim=-1)
        return quantized, codes, commitment_loss, codebook_loss


class LLMCodecResidualVectorQuantizer(nn.Module):
    """Residual VQ over `len(vq_strides)` layers; layer k quantizes what layers < k left over."""

    def __init__(self, config: LLMCodecConfig):
        super().__init__()
        self.layers = nn.ModuleList(LLMCodecVectorQuantize(config, k) for k in range(len(config.vq_strides)))

    def forward(self, latents: torch.Tensor, first_codes: torch.LongTensor | None = None):
        """
        `latents`: (batch, latent_dim, frames) -> `(quantized (batch, latent_dim, frames), codes (tuple of
        (batch, frames / stride_k)), commitment_loss, codebook_loss, per_layer_quantized)`; the per-layer quantized
        tensors (a list, each (batch, latent_dim, frames)) are returned in training mode only, else an empty list.
        `first_codes` (batch, frames / stride_1), *optional*: layer-1 codes computed elsewhere (a semantic
        teacher), or with `config.semantic_groups` the group heads layer 1 chooses within; the other layers quantize
        what layer 1 leaves.
        """
        quantized = torch.zeros_like(latents)
        residual = latents
        codes, per_layer = [], []
        commitment_loss = codebook_loss = None
        for k, layer in enumerate(self.layers):
            layer_quantized, layer_codes, commit, cb = layer(residual, first_codes if k == 0 else None)
            quantized = quantized + layer_quantized
            residual = residual - layer_quantized
            codes.append(layer_codes)
            if self.training:  # kept for the training losses only (memory grows with the input length)
                per_layer.append(layer_quantized)
            if commit is not None:
                commitment_loss = commit if commitment_loss is None else commitment_loss + commit
                codebook_loss = cb if codebook_loss is None else codebook_loss + cb
        return quantized, tuple(codes), commitment_loss, codebook_loss, per_layer

    def from_codes(self, codes, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Codes (one (batch, frames / stride_k) tensor per layer) -> quantized latent (batch, latent_dim, frames)."""
        quantized = None
        for layer, layer_codes in zip(self.layers, codes):
            vectors = layer.embed(layer_codes, dtype=dtype).repeat_interleave(layer.stride, dim=-1)
            quantized = vectors if quantized is None else quantized + vectors
        return quantized


class LLMCodecSemanticLayer1(nn.Module):
    """
    Layer-1 codes computed from a frozen teacher (`config.semantic_teacher="resemblyzer"`): at every layer-1
    position t (one per `hop_length * vq_strides[0]` samples, 120 ms by default) the Resemblyzer voice encoder embeds
    the 1.6 s window of audio that starts there (Resemblyzer's partial-utterance rule with that step: a clip shorter
    than 1.6 s is one zero-padded window, positions past the last window that fits reuse it), the nearest of
    `semantic_clusters` centroids (cosine) is chosen, and its layer-1 word is the code. The words therefore vary
    slowly, with who or what is heard rather than with the waveform, and a frozen LM can match them in context.

    The clip is first raised to -30 dBFS if quieter (the package's rule), over its own samples only, so an item of a
    padded batch gets the codes it gets alone. Everything here is frozen: `voice_encoder` (the network of
    `Resemblyzer` 0.1.4, loaded by `load_teacher_weights`), `centroids` `(clusters, 256)` and `word_codes`
    `(clusters,)` (indices into the layer-1 codebook), fitted by `llm_codec.training.fit_semantic_layer1`. With
    `config.semantic_groups` the centroid's word is the head of a group of layer-1 words and the quantizer picks the
    word within it.
    """

    def __init__(self, config: LLMCodecConfig):
        super().__init__()
        self.step_frames = config.hop_length * config.vq_strides[0] // RESEMBLYZER_HOP_LENGTH
        self.rate = RESEMBLYZER_SAMPLE_RATE / (RESEMBLYZER_HOP_LENGTH * self.step_frames)  # windows per second
        self.mel = ResemblyzerMel()
        self.voice_encoder = ResemblyzerVoiceEncoder()
        dim = self.voice_encoder.linear.out_features
        self.register_buffer("centroids", torch.zeros(config.semantic_clusters, dim))
        self.register_buffer("word_codes", torch.zeros(config.semantic_clusters, dtype=torch.long))
        self.requires_grad_(False)

    def train(self, mode: bool = True):
        """The teacher stays in eval mode."""
        return super().train(False)

    def load_teacher_weights(self, source: str | os.PathLike | dict | None = None):
        """
        Loads the voice encoder's weights, strictly: from the installed `Resemblyzer` 0.1.4 package (`None`), a
        `pretrained.pt` path (both sha256-checked), or a state dict of `lstm.*` / `linear.*` tensors (e.g. a copy
        carried elsewhere; cast to this module's dtype).
        """
        state = source if isinstance(source, dict) else load_resemblyzer_state_dict(source)
        device = self.centroids.device
        dtype = self.voice_encoder.linear.weight.dtype
        self.voice_encoder.load_state_dict({k: v.to(device, dtype) for k, v in state.items()}, strict=True)
        self.requires_grad_(False)

    @property
    def is_fitted(self) -> bool:
        """Whether centroids have been fitted (an unfitted layer has all-zero centroids)."""
        return bool(self.centroids.abs().sum() > 0)

    @torch.no_grad()
    def window_embeddings(self, audio: torch.Tensor, positions: int | None = None) -> torch.Tensor:
        """
        `audio`: (samples,) one clip, or (batch, samples) clips of the same length, at 16 kHz without padding ->
        `(positions, dim)` (or `(batch, positions, dim)`) unit vectors: the embedding of the window starting at each
        layer-1 position (the last window that fits for later positions); without `positions`, `(windows, dim)`
        (or `(batch, windows, dim)`): each window once.
        """
        single = audio.dim() == 1
        embeddings, slices = embed_partials(self.voice_encoder, self.mel, audio.reshape(-1, audio.shape[-1]), self.rate)
        if positions is not None:
            index = torch.arange(positions, device=embeddings.device).clamp(max=len(slices) - 1)
            embeddings = embeddings[:, index]
        return embeddings[0] if single else embeddings

    @torch.no_grad()
    def forward(self, input_values: torch.Tensor, audio_lengths: torch.LongTensor, positions: int) -> torch.LongTensor:
        """
        `input_values` (batch, 1, samples), `audio_lengths` (batch,) real samples per item, `positions` layer-1
        codes per item -> layer-1 codes `(batch, positions)`. Items of the same length go through the teacher
        together.
        """
        if not self.is_fitted:
            raise RuntimeError(
                "This codec computes layer 1 with a semantic teacher whose centroids were never fitted (all zero). "
                "Fit them with llm_codec.training.fit_semantic_layer1(codec, clips), or train with a config that "
                "sets `semantic_teacher` (the trainer fits them first)."
            )
        codes = torch.empty(input_values.shape[0], positions, dtype=torch.long, device=input_values.device)
        centroids = F.normalize(self.centroids.float(), dim=-1)
        for length in audio_lengths.unique().tolist():
            items = (audio_lengths == length).nonzero().flatten().to(input_values.device)
            embeddings = self.window_embeddings(input_values[items, 0, :length], positions)  # (items, positions, dim)
            codes[items] = self.word_codes[(embeddings @ centroids.T).argmax(dim=-1)]
        return codes


def is_rebuilt_weight(name: str) -> bool:
    """
    Whether a state-dict entry of a codec (or of a module holding one under a prefix, e.g. `codec.`) is a frozen
    tensor that is rebuilt rather than trained: a codebook (rebuilt from the LM's embedding table) or the semantic
    teacher's network (read from its wheel). Shipped codecs and training checkpoints leave these out.
    """
    return name.endswith(".codebook") or ".semantic.voice_encoder." in f".{name}"


class LLMCodecPreTrainedModel(PreTrainedModel):
    config_class = LLMCodecConfig
    config: LLMCodecConfig
    base_model_prefix = "llm_codec"
    main_input_name = "input_values"
    input_modalities = "audio"
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, LLMCodecSnake1d):
            init.ones_(module.alpha)
        elif isinstance(module, LLMCodecVectorQuantize):
            init.normal_(module.codebook, std=0.02)
        elif isinstance(module, ResemblyzerMel):  # constant, not saved: refilled after a meta-device load
            filters, window = module.constant_buffers()
            init.copy_(module.filters, filters)
            init.copy_(module.window, window)

    def save_pretrained(self, save_directory, *args, model_card_sections: dict[str, str] | None = None,
                        push_to_hub: bool = False, **kwargs):
        """
        `PreTrainedModel.save_pretrained` (safetensors) plus this project's model card `README.md` and the matching
        feature extractor (`preprocessor_config.json`, an `LLMCodecFeatureExtractor` at `config.sample_rate`), so that
        `AutoFeatureExtractor.from_pretrained(folder)` and `AutoProcessor.from_pretrained(folder)` work on every folder.
        With `push_to_hub=True` the folder, card included, is then uploaded (`repo_id`, `commit_message`,
        `private`, `token`, `revision`, `create_pr` as for transformers' `push_to_hub`; `repo_id` defaults to the
        folder's name).
        """
        hub = {key: kwargs.pop(key) for key in ("repo_id", "commit_message", "private", "token", "revision", "create_pr")
               if key in kwargs}
        # config.json names the few-shot pipelines, for pipeline(task, model=folder, trust_remote_code=True)
        pipelines, self.config.custom_pipelines = getattr(self.config, "custom_pipelines", None), custom_pipelines()
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if pipelines is None:
                del self.config.custom_pipelines
            else:
                self.config.custom_pipelines = pipelines
        if kwargs.get("is_main_process", True):
            if self._auto_class is not None and LLMCodecFeatureExtractor._auto_class is None:
                LLMCodecFeatureExtractor.register_for_auto_class()  # exported as remote code, like the model
            LLMCodecFeatureExtractor(sampling_rate=self.config.sample_rate).save_pretrained(save_directory)
            build_model_card(self.config, model_card_sections).save(os.path.join(save_directory, "README.md"))
            if push_to_hub:
                hub.setdefault("repo_id", os.path.basename(os.path.normpath(os.fspath(save_directory))))
                self._upload_folder(save_directory, **hub)

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: bool | str | None = None, revision: str | None = None, create_pr: bool = False,
                    max_shard_size: int | str | None = "50GB", model_card_sections: dict[str, str] | None = None,
                    **kwargs):
        """
        Uploads the codec to the Hub repository `repo_id` (created if needed) with this project's model card (not
        transformers' blank template): the folder `save_pretrained` writes, uploaded as one commit. Returns the
        commit info.
        """
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size, model_card_sections=model_card_sections)
            return self._upload_folder(folder, repo_id, commit_message=commit_message, private=private, token=token,
                                       revision=revision, create_pr=create_pr)

    @staticmethod
    def _upload_folder(folder, repo_id: str, commit_message: str | None = None, private: bool | None = None,
                       token: bool | str | None = None, revision: str | None = None, create_pr: bool = False):
        api = huggingface_hub.HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        return api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), commit_message=commit_message or
                                 "Upload LLM-Codec", revision=revision, create_pr=create_pr)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, output_loading_info: bool = False, **kwargs):
        """
        `PreTrainedModel.from_pretrained`, strict: a folder missing a weight (which transformers would initialise at
        random), holding one of another shape, or holding NaN / infinite values is refused with a `ValueError`
        naming the tensors, instead of loading a codec that silently decodes noise.
        """
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        if getattr(model, "semantic", None) is not None:
            model.semantic.requires_grad_(False)  # the loader makes loaded tensors trainable; the teacher is frozen
        problems = []
        if info.get("missing_keys"):
            problems.append(f"missing weights {sorted(info['missing_keys'])[:5]}")
        if info.get("mismatched_keys"):
            problems.append(f"weights of another shape {sorted(str(k) for k in info['mismatched_keys'])[:5]}")
        bad = model.non_finite_tensors()
        if bad:
            problems.append(f"NaN or infinite values in {bad[:5]}")
        if problems:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not a complete LLM-Codec checkpoint: {'; '.join(problems)}. The "
                "files are damaged or from another version: save or convert the codec again."
            )
        return (model, info) if output_loading_info else model

    def non_finite_tensors(self) -> list[str]:
        """Names of the floating-point weights and buffers holding a NaN or an infinite value (a damaged checkpoint)."""
        return [name for name, tensor in self.state_dict().items()
                if tensor.is_floating_point() and not torch.isfinite(tensor).all()]

    def _weight_norm_modules(self):
        return [m for m in self.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]

    def apply_weight_norm(self):
        """Re-parametrises every convolution with weight norm (magnitude and direction), as the original trains."""
        for module in self._weight_norm_modules():
            nn.utils.parametrizations.weight_norm(module)

    def remove_weight_norm(self):
        """Folds weight norm back into plain weights (the stored form)."""
        for module in self._weight_norm_modules():
            if nn.utils.parametrize.is_parametrized(module, "weight"):
                nn.utils.parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


class LLMCodecModel(LLMCodecPreTrainedModel):
    """
    LLM-Codec. Encodes 16 kHz mono audio into one code sequence per VQ layer (layer 1: indices of words, layers 2-3:
    LLM token ids), and decodes codes back into audio.

    Memory settings of an instance (not part of the saved config; the codes and audio do not depend on them beyond
    float rounding): `encode_chunk_s` (30.0) - longer inputs are encoded in chunks of about this length, with
    `encode_context_s` (0.96) of context on each side; `decode_chunk_s` (30.0) - without gradient, longer code
    sequences are decoded in chunks of about this length, with the decoder's receptive field as overlap. Set them on
    the loaded model, e.g. `model.decode_chunk_s = 10.0`, to bound memory lower.
    """

    encode_chunk_s: float = 30.0
    encode_context_s: float = 0.96
    decode_chunk_s: float = 30.0

    def __init__(self, config: LLMCodecConfig):
        super().__init__(config)
        self.encoder = LLMCodecEncoder(config)
        self.quantizer = LLMCodecResidualVectorQuantizer(config)
        self.decoder = LLMCodecDecoder(config)
        self.semantic = LLMCodecSemanticLayer1(config) if config.semantic_teacher else None
        self.post_init()

    @classmethod
    def from_language_model(
        cls, lm_or_path=None, tokenizer=None, word_list=None, max_subwords=2, layer_subset=None, **config_kwargs
    ) -> "LLMCodecModel":
        """
        A new (untrained) codec whose codebooks come from a causal LM, the paper's way: layers 2-3 are the LM's
        input-embedding table (code = token id, or a subset with `layer_subset`), layer 1 holds the words of
        `word_list` (default: the shipped English list) that the LM splits into at most `max_subwords` sub-words,
        each the mean of its sub-word embeddings. `lm_or_path`: a loaded LM (with `tokenizer`), a local folder, or
        `None` for the offline default LM. The LM's name and vocabulary fingerprint are recorded in the config.
        """
        codec = build_codec_from_language_model(
            lm_or_path,
            tokenizer=tokenizer,
            word_list=word_list,
            max_subwords=max_subwords,
            layer_subset=layer_subset,
            model_class=cls,
            **config_kwargs,
        )
        if codec.semantic is not None:
            codec.semantic.load_teacher_weights()
        return codec

    # ----------------------------------------------------------------------------------------------------- helpers

    def _check_input_values(self, input_values: torch.Tensor, padding_mask: torch.Tensor | None):
        if not torch.is_tensor(input_values):
            raise TypeError(
                f"`input_values` must be a torch tensor of shape (batch, 1, samples), got {type(input_values).__name__}. "
                "Use `LLMCodecFeatureExtractor` to turn raw audio into model inputs."
            )
        if input_values.dim() != 3 or input_values.shape[1] != 1:
            raise ValueError(
                f"`input_values` must have shape (batch, 1, samples) (mono), got {tuple(input_values.shape)}. "
                "Downmix and batch with `LLMCodecFeatureExtractor`."
            )
        if input_values.shape[-1] == 0:
            raise ValueError("`input_values` is empty (0 samples): give at least one sample of audio.")
        if not input_values.is_floating_point():
            raise TypeError(
                f"`input_values` must be float audio in [-1, 1], got {input_values.dtype}. Integer PCM must be scaled "
                "first (int16: divide by 32768); `LLMCodecFeatureExtractor` does it."
            )
        bad = int((~torch.isfinite(input_values)).sum())
        if bad:
            raise ValueError(f"`input_values` holds {bad} NaN or infinite sample(s): fix or drop the audio first.")
        if padding_mask is not None and tuple(padding_mask.shape) != (input_values.shape[0], input_values.shape[-1]):
            raise ValueError(
                f"`padding_mask` must have shape (batch, samples) = {(input_values.shape[0], input_values.shape[-1])}, "
                f"got {tuple(padding_mask.shape)}."
            )
        if padding_mask is not None:
            valid = padding_mask.to(torch.int8)
            if bool((valid[:, 1:] > valid[:, :-1]).any()):
                raise ValueError(
                    "`padding_mask` must mark each item's valid samples at the start of its row (1s, then 0s: right "
                    "padding); a row with padding before valid samples (left padding) is not supported. Pad on the "
                    "right, as `LLMCodecFeatureExtractor` does."
                )

    def _audio_lengths(self, input_values, padding_mask) -> torch.LongTensor:
        batch, _, length = input_values.shape
        if padding_mask is None:
            return torch.full((batch,), length, dtype=torch.long, device=input_values.device)
        lengths = padding_mask.long().sum(-1)
        if (lengths == 0).any():
            raise ValueError("An item of the batch has an all-zero `padding_mask` (no audio): remove it.")
        return lengths

    def _padded_lengths(self, audio_lengths: torch.LongTensor) -> torch.LongTensor:
        """Sample counts after the original padding rule (next multiple of `config.pad_multiple`), (batch,)."""
        unit = self.config.pad_multiple
        return (audio_lengths + unit - 1) // unit * unit

    def _codes_lengths(self, audio_lengths: torch.LongTensor) -> torch.LongTensor:
        frames = self._padded_lengths(audio_lengths) // self.config.hop_length
        return torch.stack([frames // s for s in self.config.vq_strides], dim=1)

    def _pad(self, input_values: torch.Tensor) -> torch.Tensor:
        """Right-pads (batch, 1, samples) with zeros to a multiple of `config.pad_multiple` (the original rule)."""
        unit = self.config.pad_multiple
        return F.pad(input_values, (0, -input_values.shape[-1] % unit))

    def encode_latents(self, input_values: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """
        `input_values`: (batch, 1, samples) -> latent (batch, latent_dim, frames), padding by the original rule.
        Inputs longer than `encode_chunk_s` go through the encoder in windows of that length with
        `encode_context_s` of context on each side, aligned to `pad_multiple`, so memory stays bounded;
        `progress` shows a tqdm bar (on standard error) over those windows.
        """
        input_values = self._pad(input_values)
        unit = self.config.pad_multiple
        chunk = max(1, round(self.encode_chunk_s * self.config.sample_rate / unit)) * unit
        context = math.ceil(self.encode_context_s * self.config.sample_rate / unit) * unit
        total = input_values.shape[-1]
        if total <= chunk + 2 * context or self.training:
            return self.encoder(input_values)
        hop = self.config.hop_length
        pieces = []
        for start in tqdm(range(0, total, chunk), desc="Encoding", unit="chunk", disable=not progress, leave=False):
            end = min(start + chunk, total)
            lo, hi = max(0, start - context), min(total, end + context)
            latent = self.encoder(input_values[..., lo:hi])
            pieces.append(latent[..., (start - lo) // hop : (end - lo) // hop])
        return torch.cat(pieces, dim=-1)

    def _encode_batch_latents(self, input_values: torch.Tensor, audio_lengths: torch.LongTensor,
                              progress: bool = False) -> torch.Tensor:
        """
        Latents of a right-padded batch. Items are grouped by their own padded length and each group is encoded at
        that length, so every item gets exactly the latents (and codes) it gets when encoded alone; frames past an
        item's length are zero.
        """
        padded = self._padded_lengths(audio_lengths)
        lengths = padded.unique()
        if len(lengths) == 1:
            return self.encode_latents(input_values[..., : int(lengths[0])], progress=progress)
        hop = self.config.hop_length
        latents = None
        for length in lengths.tolist():
            index = (padded == length).nonzero().flatten()
            group = self.encode_latents(input_values[index, :, :length], progress=progress)
            if latents is None:
                latents = group.new_zeros(input_values.shape[0], group.shape[1], int(padded.max()) // hop)
            latents[index, :, : length // hop] = group
        return latents

    # ------------------------------------------------------------------------------------------------ public API

    def semantic_codes(self, input_values: torch.Tensor, audio_lengths: torch.LongTensor | None = None,
                       frames: int | None = None) -> torch.LongTensor | None:
        """
        The teacher-computed layer-1 codes of a codec with `config.semantic_teacher`, else `None`.

        Args:
            input_values (`torch.FloatTensor` of shape `(batch, 1, samples)`): 16 kHz audio.
            audio_lengths (`torch.LongTensor` of shape `(batch,)`, *optional*): real samples per item (default: all).
            frames (`int`, *optional*): latent frames to cover (default: those of the padded input).

        Returns:
            `torch.LongTensor` of shape `(batch, frames / vq_strides[0])`, or `None` for the paper's layer 1. With
            `config.semantic_groups` these are the group heads (the words an LM reads); the layer-1 codes of
            `encode` are then words of those groups.
        """
        if self.semantic is None:
            return None
        if audio_lengths is None:
            audio_lengths = torch.full((input_values.shape[0],), input_values.shape[-1], dtype=torch.long)
        if frames is None:
            frames = int(self._padded_lengths(audio_lengths).max()) // self.config.hop_length
        return self.semantic(input_values, audio_lengths, frames // self.config.vq_strides[0])

    def encode(
        self,
        input_values: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        progress: bool = False,
    ) -> tuple | LLMCodecEncoderOutput:
        """
        Encodes audio into LLM-vocabulary codes.

        Args:
            input_values (`torch.FloatTensor` of shape `(batch, 1, samples)`): 16 kHz mono audio in [-1, 1].
            padding_mask (`torch.Tensor` of shape `(batch, samples)`, *optional*): 1 for real samples, 0 for batch
                padding (right padding only), as returned by `LLMCodecFeatureExtractor`. Each item then gets the
                same codes as when encoded alone.
            return_dict (`bool`, *optional*): return an [`LLMCodecEncoderOutput`] (default) or a tuple.
            progress (`bool`, *optional*, defaults to `False`): show a tqdm bar (on standard error) over the chunks of
                an input longer than `encode_chunk_s` (shorter inputs are one pass, without a bar).

        Returns:
            [`LLMCodecEncoderOutput`]: `audio_codes`, a tuple with one `(batch, frames / vq_strides[k])` LongTensor per
            layer (frames = padded samples / hop_length), `audio_codes_lengths` `(batch, num_quantizers)`,
            `audio_lengths` `(batch,)` and `quantized_representation` `(batch, latent_dim, frames)`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_input_values(input_values, padding_mask)
        audio_lengths = self._audio_lengths(input_values, padding_mask)
        if padding_mask is not None:
            input_values = input_values * padding_mask[:, None, :].to(input_values.dtype)
        input_values = input_values.to(self.dtype)
        latents = self._encode_batch_latents(input_values, audio_lengths, progress=progress)
        first_codes = self.semantic_codes(input_values, audio_lengths, latents.shape[-1])
        quantized, codes, commitment_loss, codebook_loss, _ = self.quantizer(latents, first_codes=first_codes)
        codes_lengths = self._codes_lengths(audio_lengths)
        if not return_dict:
            return (codes, codes_lengths, audio_lengths, quantized, commitment_loss, codebook_loss)
        return LLMCodecEncoderOutput(
            audio_codes=codes,
            audio_codes_lengths=codes_lengths,
            audio_lengths=audio_lengths,
            quantized_representation=quantized,
            commitment_loss=commitment_loss,
            codebook_loss=codebook_loss,
        )

    def check_codes(self, audio_codes) -> tuple[torch.LongTensor, ...]:
        """
        Validates codes for `decode`: one `(batch, T_k)` (or `(T_k,)`) integer tensor per layer with
        `T_k * vq_strides[k]` equal across layers and a multiple of the attention window. Returns them as a tuple of
        2-D LongTensors; raises `ValueError` saying what is wrong otherwise.
        """
        num_layers = self.config.num_quantizers
        if torch.is_tensor(audio_codes) and audio_codes.dim() == 3 and audio_codes.shape[1] == num_layers:
            raise ValueError(
                "`audio_codes` must be a sequence with one tensor per VQ layer (layers have different lengths), "
                "not a single (batch, layers, time) tensor."
            )
        if torch.is_tensor(audio_codes) or len(audio_codes) != num_layers:
            got = "a tensor" if torch.is_tensor(audio_codes) else f"{len(audio_codes)} layers"
            raise ValueError(f"`audio_codes` must hold {num_layers} code tensors (one per VQ layer), got {got}.")
        codes = []
        for k, layer_codes in enumerate(audio_codes):
            layer_codes = torch.as_tensor(layer_codes)
            if layer_codes.is_floating_point() or layer_codes.is_complex() or layer_codes.dtype in (torch.bool, torch.uint8):
                raise ValueError(f"Codes of layer {k} must be integers (code indices, int64 as `encode` returns), got "
                                 f"dtype {layer_codes.dtype}.")
            if layer_codes.dim() == 1:
                layer_codes = layer_codes[None]
            if layer_codes.dim() != 2:
                raise ValueError(f"Codes of layer {k} must have shape (batch, time), got {tuple(layer_codes.shape)}.")
            codes.append(layer_codes.long())
        frames = [c.shape[1] * s for c, s in zip(codes, self.config.vq_strides)]
        if len({c.shape[0] for c in codes}) != 1 or len(set(frames)) != 1:
            raise ValueError(
                f"Code lengths {[tuple(c.shape) for c in codes]} do not describe one clip: layer k must have "
                f"frames / {self.config.vq_strides} codes, with the same batch size in every layer."
            )
        window = self.config.attn_window_size or 1
        if frames[0] == 0 or frames[0] % window:
            raise ValueError(
                f"The codes span {frames[0]} frames; decoding needs a positive multiple of {window} frames "
                f"({window // math.gcd(window, self.config.vq_strides[0])} layer-1 codes), as `encode` produces."
            )
        return tuple(codes)

    def decode(
        self,
        audio_codes,
        audio_lengths: torch.Tensor | None = None,
        return_dict: bool | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> tuple | LLMCodecDecoderOutput:
        """
        Decodes codes into audio.

        Args:
            audio_codes (`tuple[torch.LongTensor]`): one `(batch, frames / vq_strides[k])` tensor per layer, as
                returned by `encode`.
            audio_lengths (`torch.LongTensor` of shape `(batch,)`, *optional*): original sample counts (from
                `encode`); when given the output is trimmed to the longest and zeroed past each item's end.
            return_dict (`bool`, *optional*): return an [`LLMCodecDecoderOutput`] (default) or a tuple.
            generator (`torch.Generator`, *optional*): source of the decoder noise (default: torch's global RNG,
                which reproduces the original implementation under the same seed).
            progress (`bool`, *optional*, defaults to `False`): show a tqdm bar (on standard error) over the chunks of
                codes longer than two `decode_chunk_s` (shorter codes are one pass, without a bar).

        Returns:
            [`LLMCodecDecoderOutput`] with `audio_values` `(batch, 1, samples)` and, when trimmed, `padding_mask`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        codes = tuple(c.to(self.device) for c in self.check_codes(audio_codes))
        quantized = self.quantizer.from_codes(codes, dtype=self.dtype)
        audio_values = self.decoder(quantized, generator=generator, chunk_frames=self._decode_chunk_frames(),
                                    progress=progress)
        padding_mask = None
        if audio_lengths is not None:
            audio_values, padding_mask = self._trim(audio_values, audio_lengths)
        if not return_dict:
            return (audio_values, padding_mask)
        return LLMCodecDecoderOutput(audio_values=audio_values, padding_mask=padding_mask)

    def _decode_chunk_frames(self) -> int:
        """`decode_chunk_s` in latent frames, rounded to whole attention windows (at least one)."""
        window = self.config.attn_window_size or 1
        frames = self.decode_chunk_s * self.config.sample_rate / self.config.hop_length
        return max(1, round(frames / window)) * window

    @staticmethod
    def _trim(audio_values: torch.Tensor, audio_lengths) -> tuple[torch.Tensor, torch.LongTensor]:
        audio_lengths = torch.as_tensor(audio_lengths, device=audio_values.device).long().view(-1)
        if audio_lengths.shape[0] != audio_values.shape[0]:
            raise ValueError(
                f"`audio_lengths` has {audio_lengths.shape[0]} entries for a batch of {audio_values.shape[0]}."
            )
        if int(audio_lengths.max()) > audio_values.shape[-1]:
            raise ValueError(
                f"`audio_lengths` asks for {int(audio_lengths.max())} samples but the codes decode to "
                f"{audio_values.shape[-1]}: the lengths do not belong to these codes."
            )
        audio_values = audio_values[..., : int(audio_lengths.max())]
        positions = torch.arange(audio_values.shape[-1], device=audio_values.device)
        padding_mask = (positions[None, :] < audio_lengths[:, None]).long()
        return audio_values * padding_mask[:, None, :].to(audio_values.dtype), padding_mask

    def forward(
        self,
        input_values: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple | LLMCodecOutput:
        """
        Encodes then decodes.

        Args:
            input_values (`torch.FloatTensor` of shape `(batch, 1, samples)`): 16 kHz mono audio.
            padding_mask (`torch.Tensor` of shape `(batch, samples)`, *optional*): 1 for real samples.
            return_dict (`bool`, *optional*): return an [`LLMCodecOutput`] (default) or a tuple.
            generator (`torch.Generator`, *optional*): source of the decoder noise.

        Returns:
            [`LLMCodecOutput`]: `audio_values` `(batch, 1, samples)` trimmed to the input, the codes, and in training
            mode `loss`, `commitment_loss` and `codebook_loss` (averaged over the batch).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        encoded = self.encode(input_values, padding_mask=padding_mask, return_dict=True)
        audio_values = self.decoder(encoded.quantized_representation, generator=generator)
        audio_values = audio_values[..., : input_values.shape[-1]]
        if padding_mask is not None:
            audio_values, _ = self._trim(audio_values, encoded.audio_lengths)
        loss = commitment_loss = codebook_loss = None
        if encoded.commitment_loss is not None:
            commitment_loss = encoded.commitment_loss.mean()
            codebook_loss = encoded.codebook_loss.mean()
            loss = (
                self.config.commitment_loss_weight * commitment_loss
                + self.config.codebook_loss_weight * codebook_loss
            )
        if not return_dict:
            return (
                loss,
                audio_values,
                encoded.audio_codes,
                encoded.audio_codes_lengths,
                encoded.quantized_representation,
                commitment_loss,
                codebook_loss,
            )
        return LLMCodecOutput(
            loss=loss,
            audio_values=audio_values,
            audio_codes=encoded.audio_codes,
            audio_codes_lengths=encoded.audio_codes_lengths,
            quantized_representation=encoded.quantized_representation,
            commitment_loss=commitment_loss,
            codebook_loss=codebook_loss,
        )


__all__ = [
    "is_rebuilt_weight",
    "LLMCodecModel",
    "LLMCodecPreTrainedModel",
    "LLMCodecEncoderOutput",
    "LLMCodecDecoderOutput",
    "LLMCodecOutput",
]
