"""Configuration of LLM-Codec, the audio codec whose codebooks are frozen LLM embedding tables."""

import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

SEMANTIC_TEACHERS = ("resemblyzer",)


@strict
class LLMCodecConfig(PreTrainedConfig):
    r"""
    Configuration of an [`LLMCodecModel`]. The defaults are the hyper-parameters of the released LLM-Codec
    (UniAudio 1.5): 16 kHz audio, hop 480 (encoder rates 3*4*5*8), three VQ layers pooled by 4, 2 and 1 whose
    codebooks are a 3248-word table (layer 1) and a 32000-token LLaMA-2 table (layers 2-3), 4096-dim.

    A config built with only the architecture arguments gives a working model with random codebooks; use
    `LLMCodecModel.from_language_model` or the checkpoint converter to get real ones.

    Args:
        sample_rate (`int`, defaults to 16000): sampling rate of the audio, in Hz.
        encoder_dim (`int`, defaults to 32): channels after the first encoder convolution; doubled by every block.
        encoder_rates (`list[int]`, defaults to `[3, 4, 5, 8]`): stride of each encoder block (hop = product).
        latent_dim (`int`, *optional*, defaults to 512): latent channels; `None` means `encoder_dim * 2**len(encoder_rates)`.
        decoder_dim (`int`, defaults to 1536): channels at the decoder input; halved by every block.
        decoder_rates (`list[int]`, defaults to `[8, 5, 4, 3]`): up-sampling stride of each decoder block.
        vq_strides (`list[int]`, defaults to `[4, 2, 1]`): average-pooling stride of each residual VQ layer.
        attn_window_size (`int`, *optional*, defaults to 8): window of the local attention, in frames (`None`: no attention).
        attn_head_dim (`int`, defaults to 64): channels per attention head.
        noise (`bool`, defaults to `True`): whether decoder blocks add learned multiplicative noise.
        depthwise (`bool`, defaults to `True`): depthwise convolutions in residual units.
        use_cblinear (`bool`, defaults to `True`): project codebook vectors into the latent space with a linear
            layer (the released model); `False` projects latents into the codebook space instead.
        codebook_sizes (`list[int]`, defaults to `[3248, 32000, 32000]`): entries of each VQ layer's codebook.
        codebook_dim (`int`, defaults to 4096): width of the codebook vectors (the LLM's embedding width).
        layer1_words (`list[str]`, *optional*): the word of each layer-1 codebook entry.
        llm_name_or_path (`str`, *optional*): the LLM whose vocabulary gave the layer-2/3 codebooks.
        llm_vocab_size (`int`, *optional*): size of that LLM's vocabulary.
        llm_vocab_fingerprint (`str`, *optional*): fingerprint of that vocabulary (see `llm_codec.vocabulary`).
        layer_token_ids (`list[list[int] | None]`, *optional*): per VQ layer, the LLM token id of each codebook
            entry when the layer uses a subset of the vocabulary (`None`: code == token id).
        commitment_loss_weight (`float`, defaults to 0.25): weight of the commitment loss in `loss`.
        codebook_loss_weight (`float`, defaults to 1.0): weight of the codebook loss in `loss`.
        semantic_teacher (`str`, *optional*): compute the layer-1 codes from a frozen teacher instead of the
            latent (SemantiCodec's way of making the first tokens semantic): `"resemblyzer"` embeds a 1.6 s window
            of audio at every layer-1 position with the Resemblyzer voice encoder (`llm_codec.voice_encoder`) and
            writes the nearest of `semantic_clusters` centroids as its word. Layers 2-3 then quantize what that
            layer leaves of the latent, and the decoder is unchanged. `None` (default): the paper's layer 1.
        semantic_clusters (`int`, defaults to 16): number of teacher centroids, each written as one layer-1 word
            (centroids and words are fitted by `llm_codec.training.fit_semantic_layer1`).
        semantic_groups (`bool`, defaults to `False`): with a `semantic_teacher`, split the layer-1 words into one
            group per centroid instead of giving each centroid one word: the teacher chooses the group and the
            latent chooses the word within it, so layer 1 keeps acoustic detail for the decoder, and an LM reads
            each word as its group's head word (the centroid's word; `LLMCodecProcessor` does this for the
            understanding serialisation). The partition is the buffer `quantizer.layers.0.word_heads`, fitted with
            the centroids.
    """

    model_type = "llm_codec"
    attribute_map = {"sampling_rate": "sample_rate"}

    sample_rate: int = 16000
    encoder_dim: int = 32
    encoder_rates: list[int] | tuple[int, ...] = (3, 4, 5, 8)
    latent_dim: int | None = 512
    decoder_dim: int = 1536
    decoder_rates: list[int] | tuple[int, ...] = (8, 5, 4, 3)
    vq_strides: list[int] | tuple[int, ...] = (4, 2, 1)
    attn_window_size: int | None = 8
    attn_head_dim: int = 64
    noise: bool = True
    depthwise: bool = True
    use_cblinear: bool = True
    codebook_sizes: list[int] | tuple[int, ...] = (3248, 32000, 32000)
    codebook_dim: int = 4096
    layer1_words: list[str] | None = None
    llm_name_or_path: str | None = None
    llm_vocab_size: int | None = None
    llm_vocab_fingerprint: str | None = None
    layer_token_ids: list | None = None
    commitment_loss_weight: float = 0.25
    codebook_loss_weight: float = 1.0
    semantic_teacher: str | None = None
    semantic_clusters: int = 16
    semantic_groups: bool = False

    def __post_init__(self, **kwargs):
        for name in ("encoder_rates", "decoder_rates", "vq_strides", "codebook_sizes"):
            setattr(self, name, [int(v) for v in getattr(self, name)])
        if self.latent_dim is None:
            self.latent_dim = self.encoder_dim * 2 ** len(self.encoder_rates)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Checks that the hyper-parameters describe a buildable codec; raises `ValueError` naming the problem."""
        if len(self.codebook_sizes) != len(self.vq_strides):
            raise ValueError(
                f"`codebook_sizes` has {len(self.codebook_sizes)} entries but `vq_strides` has {len(self.vq_strides)}: "
                "give one codebook size per VQ layer."
            )
        if self.latent_dim != self.encoder_dim * 2 ** len(self.encoder_rates):
            raise ValueError(
                f"`latent_dim` ({self.latent_dim}) must equal the encoder output width encoder_dim * 2**len(encoder_rates) "
                f"= {self.encoder_dim * 2 ** len(self.encoder_rates)} (or be left as None)."
            )
        if math.prod(self.encoder_rates) != math.prod(self.decoder_rates):
            raise ValueError(
                f"The encoder hop ({math.prod(self.encoder_rates)}) must equal the decoder up-sampling "
                f"({math.prod(self.decoder_rates)}): make `decoder_rates` a permutation of `encoder_rates`."
            )
        if self.decoder_dim % 2 ** len(self.decoder_rates):
            raise ValueError(f"`decoder_dim` ({self.decoder_dim}) must be divisible by 2**len(decoder_rates).")
        hidden = self.encoder_dim * 2 ** len(self.encoder_rates)
        if self.attn_window_size is not None:
            for name, dim in (("encoder", hidden), ("decoder", self.decoder_dim)):
                if dim % self.attn_head_dim:
                    raise ValueError(
                        f"The {name} attention width ({dim}) is not a multiple of `attn_head_dim` ({self.attn_head_dim})."
                    )
        if self.semantic_teacher is not None:
            if self.semantic_teacher not in SEMANTIC_TEACHERS:
                raise ValueError(
                    f"Unknown `semantic_teacher` {self.semantic_teacher!r}: use one of {SEMANTIC_TEACHERS} or None."
                )
            if not 2 <= self.semantic_clusters <= self.codebook_sizes[0]:
                raise ValueError(
                    f"`semantic_clusters` ({self.semantic_clusters}) must be between 2 and the layer-1 codebook size "
                    f"({self.codebook_sizes[0]}): each centroid is written as one layer-1 word."
                )
            step = self.hop_length * self.vq_strides[0]
            if self.sample_rate != 16000 or step % 160:
                raise ValueError(
                    f"`semantic_teacher` {self.semantic_teacher!r} reads 16 kHz audio in 10 ms frames: it needs "
                    f"sample_rate 16000 (got {self.sample_rate}) and a layer-1 step (hop_length * vq_strides[0] = "
                    f"{step} samples) that is a multiple of 160."
                )
        if self.semantic_groups and self.semantic_teacher is None:
            raise ValueError("`semantic_groups=True` needs a `semantic_teacher` (the teacher chooses each group).")
        if self.layer1_words is not None and len(self.layer1_words) != self.codebook_sizes[0]:
            raise ValueError(
                f"`layer1_words` has {len(self.layer1_words)} words but the layer-1 codebook has "
                f"{self.codebook_sizes[0]} entries."
            )
        if self.layer_token_ids is not None:
            if len(self.layer_token_ids) != len(self.vq_strides):
                raise ValueError("`layer_token_ids` needs one entry (a list of ids or None) per VQ layer.")
            for k, ids in enumerate(self.layer_token_ids):
                if ids is not None and len(ids) != self.codebook_sizes[k]:
                    raise ValueError(
                        f"`layer_token_ids[{k}]` maps {len(ids)} entries but codebook {k} has {self.codebook_sizes[k]}."
                    )

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (480 for the released model)."""
        return math.prod(self.encoder_rates)

    @property
    def num_quantizers(self) -> int:
        return len(self.vq_strides)

    @property
    def frame_rate(self) -> float:
        """Latent frames per second (33.33 for the released model)."""
        return self.sample_rate / self.hop_length

    @property
    def pad_multiple(self) -> int:
        """Inputs are right-padded with zeros to a multiple of this many samples (`hop * lcm(vq_strides[0], window)`)."""
        return self.hop_length * math.lcm(self.vq_strides[0], self.attn_window_size or 1)

    @property
    def tokens_per_second(self) -> list[float]:
        """Codes per second of each VQ layer (8.33, 16.67, 33.33 for the released model)."""
        return [self.frame_rate / s for s in self.vq_strides]

    @property
    def bitrate(self) -> float:
        """Bits per second: sum over layers of tokens/s * log2(codebook size)."""
        return sum(r * math.log2(n) for r, n in zip(self.tokens_per_second, self.codebook_sizes))


__all__ = ["LLMCodecConfig"]
