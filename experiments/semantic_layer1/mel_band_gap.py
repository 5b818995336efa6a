"""Where in the spectrum does one codec's mel distance differ from another's? Re-decodes the clips of a
`llm-codec evaluate codec` result with two codecs (the same decoder-noise seed per clip), aligns each output as the
evaluation does, and splits the multi-scale log-mel L1 distance (the `mel_distance` metric) by the mel bands' centre
frequency at `--edges` (Hz):

    python experiments/semantic_layer1/mel_band_gap.py \\
        --results experiments/semantic_layer1/results/grouped_bigbatch_read_speech/results.json \\
        --a runs/grouped_bigbatch_step449 --b default

Prints, per band range, each codec's share of the distance and the mean paired difference (a minus b) with a 95 % bootstrap
interval over clips. An experiment, not part of the package.
"""

import argparse
import json

import numpy as np
import torch

from llm_codec.audio_io import load_audio
from llm_codec.evaluation.codec_cli import load_codec
from llm_codec.evaluation.scoring import align_to_reference
from llm_codec.evaluation.statistics import paired_difference
from llm_codec.mel import MultiScaleMelLoss, mel_band_centres


def band_distances(loss: MultiScaleMelLoss, prediction, reference, centres, edges):
    """Per band range (cut at `edges`), its part of the metric: the sum over scales of the mean |log10 mel|
    difference over all bands of the scale, counting only the range's bands."""
    parts = np.zeros(len(edges) + 1)
    x = torch.from_numpy(prediction).float()[None, None]
    y = torch.from_numpy(reference).float()[None, None]
    for k, (mx, my) in enumerate(zip(loss.mel_spectrograms(x), loss.mel_spectrograms(y))):
        diff = (mx.clamp_min(loss.clamp_eps).log10() - my.clamp_min(loss.clamp_eps).log10()).abs()[0]  # (bands, frames)
        per_band = diff.mean(dim=1).numpy()
        ranges = np.searchsorted(np.asarray(edges), centres[k].numpy(), side="right")
        for r in range(len(parts)):
            parts[r] += per_band[ranges == r].sum() / per_band.size
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--a", required=True, help="codec folder (or 'default')")
    parser.add_argument("--b", default="default")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--edges", type=float, nargs="+", default=[1000.0, 4000.0, 7000.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    clips = [row["clip"] for row in json.load(open(args.results))["systems"][0]["per_clip"]]
    codecs = {name: load_codec(None if spec == "default" else spec)[0].eval() for name, spec in (("a", args.a), ("b", args.b))}
    rate = 16000
    loss = MultiScaleMelLoss(rate)
    centres = [mel_band_centres(getattr(loss, f"filters_{k}"), rate) for k in range(len(loss.window_lengths))]
    rows = {"a": [], "b": []}
    for index, clip in enumerate(clips):
        samples, _ = load_audio(f"{args.data_root}/{clip}", rate)
        reference = samples.mean(axis=0).astype(np.float32)
        for name, codec in codecs.items():
            audio = torch.from_numpy(reference)[None, None]
            encoded = codec.encode(audio)
            generator = torch.Generator().manual_seed(args.seed + index)
            decoded = codec.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths, generator=generator)
            prediction = decoded.audio_values[0, 0].float().numpy()
            aligned, _ = align_to_reference(prediction, reference, rate)
            rows[name].append(band_distances(loss, aligned, reference, centres, args.edges))
    a, b = np.array(rows["a"]), np.array(rows["b"])
    print(f"{len(clips)} clips; multi-scale log-mel L1 split at {args.edges} Hz; a = {args.a}, b = {args.b}")
    bounds = [0.0, *args.edges, rate / 2]
    for j in range(a.shape[1]):
        part = f"bands centred in {bounds[j]:.0f}-{bounds[j + 1]:.0f} Hz"
        d = paired_difference(a[:, j], b[:, j])
        print(f"{part}: a {a[:, j].mean():.3f}, b {b[:, j].mean():.3f}, "
              f"a - b {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")
    total = paired_difference(a.sum(1), b.sum(1))
    print(f"all bands: a {a.sum(1).mean():.3f}, b {b.sum(1).mean():.3f}, "
          f"a - b {total['mean']:+.4f} [{total['low']:+.4f}, {total['high']:+.4f}]")


if __name__ == "__main__":
    main()
