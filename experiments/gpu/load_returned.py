"""
Rebuilds, here, the whole codec from the `model.safetensors` a lent GPU returned (`experiments/gpu/gpu_train.py`,
`gpu_pair.sh`) and saves it as a folder that `llm-codec evaluate codec|fewshot --model FOLDER` reads.

    python experiments/gpu/load_returned.py a/model.safetensors --output runs/design2_gpu_a \
        [--same-words-as runs/design2_layer1]

The returned file holds every weight but the frozen parts rebuilt where the codec is loaded: the codebooks (from
the default LM, `load_default_codec()`) and, for a design-2 codec (`semantic.*` tensors present), the Resemblyzer
voice encoder (`training.add_semantic_layer1`: the installed wheel, sha256-pinned). Its keys must be exactly the
rest of that codec's state (strict: a missing or unexpected key is an error). Weights holding
`quantizer.layers.0.word_heads` (a run of experiments/semantic_layer1/grouped_gpu.yaml) are rebuilt as a codec with
grouped layer-1 words (`semantic_groups`). `--same-words-as FOLDER` also checks that the centroids and word codes
are exactly that folder's (and its word groups, when both codecs are grouped) and that both codecs give the same
teacher-computed layer-1 codes (`semantic_codes`: the layer-1 codes of design 2, the group heads of grouped words)
on one development clip (the few-shot results measured on FOLDER then hold for the rebuilt codec's words).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TEACHER_KEYS = "semantic.voice_encoder."
HEADS_KEY = "quantizer.layers.0.word_heads"  # the layer-1 word groups of a codec with semantic_groups


def load_returned_codec(weights: str | Path | dict, base=None, teacher: str = "resemblyzer"):
    """
    The codec of returned `weights` (a path or a state dict): `base` (default: `load_default_codec()`, float32),
    turned into a design-2 codec by `add_semantic_layer1` when the weights hold `semantic.*` tensors (clusters from
    `semantic.centroids`; grouped layer-1 words when they also hold `quantizer.layers.0.word_heads`), then loaded
    with the weights. Raises `ValueError` when the weights miss a key of that codec or hold one it does not have
    (the codebooks and the voice encoder are not expected), hold a NaN, or hold unfitted centroids or groups.
    """
    from llm_codec.training.semantic_layer1 import add_semantic_layer1, groups_headed_by

    state = load_file(str(weights)) if not isinstance(weights, dict) else dict(weights)
    if base is None:
        from llm_codec.default_model import load_default_codec

        base = load_default_codec()[0]
    codec = base.float()
    if any(k.startswith("semantic.") for k in state) or HEADS_KEY in state:
        if "semantic.centroids" not in state:
            raise ValueError(f"the weights hold semantic.* tensors or {HEADS_KEY} but no semantic.centroids")
        codec = add_semantic_layer1(codec, teacher, int(state["semantic.centroids"].shape[0]),
                                    groups=HEADS_KEY in state)
    own = codec.state_dict()
    expected = {k for k in own if not k.endswith(".codebook") and not k.startswith(TEACHER_KEYS)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"the returned weights do not fit the codec: missing {missing[:5]} ({len(missing)}), "
                         f"unexpected {unexpected[:5]} ({len(unexpected)})")
    shapes = [k for k in state if state[k].shape != own[k].shape]
    if shapes:
        raise ValueError(f"the returned weights have other shapes for {shapes[:5]}")
    codec.load_state_dict({**own, **state}, strict=True)
    bad = codec.non_finite_tensors()
    if bad:
        raise ValueError(f"NaN or infinite values in {bad[:5]}")
    if codec.semantic is not None and not codec.semantic.is_fitted:
        raise ValueError("the returned semantic.centroids are all zero (never fitted)")
    first = codec.quantizer.layers[0]
    if first.word_heads is not None:
        if not first.groups_fitted:
            raise ValueError(f"the returned {HEADS_KEY} hold -1 (groups never fitted)")
        if not groups_headed_by(first.word_heads, codec.semantic.word_codes):
            raise ValueError(f"the returned {HEADS_KEY} are not headed by semantic.word_codes")
    return codec.eval()


def check_same_words(codec, folder: str | Path, clip: str | Path | None = None) -> int:
    """Checks that `codec` has exactly the centroids and word codes of the codec saved in `folder` (and its
    `quantizer.layers.0.word_heads` when both codecs group their layer-1 words) and gives the same teacher-computed
    layer-1 codes (`semantic_codes`) on `clip` (default: the first clip of data/dev_speech.jsonl); returns the
    positions compared."""
    from llm_codec.audio_io import read_audio
    from llm_codec.modeling_llm_codec import LLMCodecModel

    sys.path.insert(0, str(ROOT / "experiments" / "gpu"))
    from gpu_bundle import read_semantic_tensors, read_word_heads, teacher_codes

    saved = read_semantic_tensors(Path(folder))
    for key in ("semantic.centroids", "semantic.word_codes"):
        if not torch.equal(codec.state_dict()[key].cpu(), saved[key].to(codec.state_dict()[key].dtype)):
            raise ValueError(f"{key} differ from those of {folder}")
    heads, their_heads = codec.quantizer.layers[0].word_heads, read_word_heads(Path(folder))
    if heads is not None and their_heads is not None and not torch.equal(heads.cpu(), their_heads.to(heads.dtype)):
        raise ValueError(f"{HEADS_KEY} differ from those of {folder} at {int((heads.cpu() != their_heads).sum())} "
                         f"of {len(heads)} words")
    if clip is None:
        manifest = ROOT / "data" / "dev_speech.jsonl"
        clip = manifest.parent / json.loads(manifest.read_text().splitlines()[0])["path"]
    audio = read_audio(str(clip), codec.config.sample_rate)
    other = LLMCodecModel.from_pretrained(str(folder)).float().eval()
    ours, theirs = teacher_codes(codec, audio), teacher_codes(other, audio)
    if ours != theirs:
        raise ValueError(f"layer-1 teacher codes on {clip} differ from those of {folder} at "
                         f"{sum(a != b for a, b in zip(ours, theirs))} of {len(ours)} positions")
    return len(ours)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("weights", help="model.safetensors returned by gpu_train.py / gpu_pair.sh")
    parser.add_argument("--output", required=True, help="folder to save the whole codec to (save_pretrained)")
    parser.add_argument("--same-words-as", default=None,
                        help="a design-2 (or grouped) folder whose words (and groups, when both are grouped) must be kept")
    args = parser.parse_args(argv)
    codec = load_returned_codec(args.weights)
    grouped = codec.quantizer.layers[0].word_heads is not None
    if args.same_words_as:
        positions = check_same_words(codec, args.same_words_as)
        sys.path.insert(0, str(ROOT / "experiments" / "gpu"))
        from gpu_bundle import read_word_heads

        both = grouped and read_word_heads(Path(args.same_words_as)) is not None
        print(f"same centroids and words{' and word groups' if both else ''} as {args.same_words_as}; layer-1 "
              f"{'group heads' if grouped else 'codes'} equal on {positions} positions")
    codec.save_pretrained(args.output)
    kind = "grouped-words" if grouped else "design 2" if codec.semantic is not None else "plain"
    print(f"saved {args.output} ({kind} codec)")


if __name__ == "__main__":
    main()
