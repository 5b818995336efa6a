"""Does the default codec carry pitch? A linear probe of F0 from its latents, and F0 tracking of its output.

    python benchmarks/probe_pitch.py [--fit-clips 200] [--json benchmarks/results_probe_pitch.json]

Method: F0 by normalised autocorrelation (frames of 40 ms centred on the codec's frames, hop 480 samples = 30 ms;
lags for 60-400 Hz; voiced where the peak exceeds 0.6 and the frame is within 35 dB of the clip's loudest). Probe:
ridge regression (standardised features, alpha 10) from a frame's 256-dim vector and its two neighbours to log2 F0
on voiced frames, fitted on `--fit-clips` seeded training-split speech clips and scored (R^2, RMS error in
semitones) on the development clips (data/dev_speech.jsonl), for three representations: the encoder output before
the VQ, the quantized latent the decoder receives, and, as a floor, frame energy alone. Tracking: on frames voiced
in both the original and the reconstruction, the correlation of log F0 and the share within one semitone; plus the
voicing agreement. Comb: long-term average spectra (1 s Hann frames, half overlap, 1 Hz bins) of the development
clips and of their reconstructions; at each multiple of the first decoder stage's frame rate (33.33 Hz x 8 = 266.7
Hz) the peak within +-2 Hz over the median of +-30 Hz, in dB. Comb removal: PESQ-WB (pesq, wideband, after the
evaluation's delay compensation) of the development reconstructions as they are and after a notch comb at every
multiple of that rate, H(z) = (1 + r) / 2 * (1 - z^-P) / (1 - r z^-P) with P = 60 samples, for r in 0.9, 0.95, 0.98
(narrower notches as r -> 1): would a fixed post-filter against the buzz raise the score?
"""

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOP, WINDOW, RATE = 480, 640, 16000
FMIN, FMAX, VOICED, FLOOR_DB = 60.0, 400.0, 0.6, 35.0


def frame_f0(audio: np.ndarray, frames: int) -> np.ndarray:
    """F0 in Hz per codec frame (NaN when unvoiced); `audio` (samples,)."""
    padded = np.pad(audio, (WINDOW, WINDOW))
    lo, hi = int(RATE / FMAX), int(RATE / FMIN)
    out = np.full(frames, np.nan)
    energies = []
    segments = []
    for t in range(frames):
        centre = WINDOW + t * HOP + HOP // 2
        seg = padded[centre - WINDOW // 2 - hi // 2: centre + WINDOW // 2 + hi // 2 + 1]
        seg = seg - seg.mean()
        segments.append(seg)
        energies.append(float(np.sum(seg[: WINDOW] ** 2)))
    loud = max(max(energies), 1e-12)
    for t, seg in enumerate(segments):
        if energies[t] < loud * 10 ** (-FLOOR_DB / 10):
            continue
        head = seg[:WINDOW]
        head_energy = energies[t]  # np.sum(head ** 2), computed above
        best, best_lag = 0.0, 0
        for lag in range(lo, hi + 1):
            tail = seg[lag: lag + WINDOW]
            denom = np.sqrt(head_energy * np.sum(tail ** 2)) + 1e-12
            r = float(np.dot(head, tail) / denom)
            if r > best:
                best, best_lag = r, lag
        if best >= VOICED:
            out[t] = RATE / best_lag
    return out


def with_context(x: np.ndarray) -> np.ndarray:
    """(frames, dim) -> (frames, 3 dim): each frame with its neighbours (edges repeated)."""
    prev = np.concatenate([x[:1], x[:-1]])
    nxt = np.concatenate([x[1:], x[-1:]])
    return np.concatenate([prev, x, nxt], axis=1)


def ridge_fit(x, y, alpha=10.0):
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return lambda q: ((q - mean) / std) @ w + y.mean()


def notch_pesq(pairs, period: int) -> dict:
    """Mean PESQ-WB of (reconstruction, original) pairs without and with a notch comb of `period` samples."""
    from pesq import pesq
    from scipy.signal import lfilter

    from llm_codec.evaluation.scoring import align_to_reference

    scores = {}
    for r in (None, 0.9, 0.95, 0.98):
        if r is not None:
            b, a = np.zeros(period + 1), np.zeros(period + 1)
            b[0], b[period], a[0], a[period] = (1 + r) / 2, -(1 + r) / 2, 1.0, -r
        values = []
        for rec, orig in pairs:
            if r is not None:
                rec = lfilter(b, a, rec).astype(np.float32)
            values.append(pesq(RATE, orig, align_to_reference(rec, orig, RATE)[0], "wb"))
        scores["none" if r is None else f"r={r}"] = float(np.mean(values))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--fit-clips", type=int, default=200)
    parser.add_argument("--data", default="data")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    from llm_codec.default_model import load_default_codec
    from llm_codec.audio_io import load_mono_audio as load_clip

    torch.set_num_threads(2)
    codec, _, _ = load_default_codec()
    data = Path(args.data)
    rows = [json.loads(l) for l in (data / "codec_train_nodev.jsonl").read_text().splitlines()]
    fit_rows = random.Random(0).sample([r for r in rows if r["kind"] == "speech"], args.fit_clips)
    dev_rows = [json.loads(l) for l in (data / "dev_speech.jsonl").read_text().splitlines()]

    def features(row, reconstruct=False):
        audio = load_clip(data / row["path"], RATE)
        x = torch.from_numpy(audio).float()[None, None]
        with torch.no_grad():
            latents = codec.encode_latents(x)
            quantized = codec.quantizer(latents)[0]
            frames = min(latents.shape[-1], len(audio) // HOP)
            out = {"encoder": latents[0, :, :frames].T.numpy(), "quantized": quantized[0, :, :frames].T.numpy()}
            f0 = frame_f0(audio, frames)
            energy = np.array([[np.log(np.mean(audio[t * HOP:(t + 1) * HOP] ** 2) + 1e-9)] for t in range(frames)])
            out["energy"] = energy
            if reconstruct:
                rec = codec(x, generator=torch.Generator().manual_seed(0)).audio_values[0, 0, : len(audio)].numpy()
                out["f0_reconstruction"] = frame_f0(rec, frames)
                out["audio"], out["reconstruction"] = audio, rec
        return out, f0

    fit = [features(r) for r in fit_rows]
    dev = [features(r, reconstruct=True) for r in dev_rows]
    results = {"method": __doc__.split("Method: ")[1].strip(), "fit_clips": len(fit), "dev_clips": len(dev)}
    for name in ("encoder", "quantized", "energy"):
        xs = np.concatenate([with_context(f[name])[~np.isnan(f0)] for f, f0 in fit])
        ys = np.log2(np.concatenate([f0[~np.isnan(f0)] for _, f0 in fit]))
        predict = ridge_fit(xs, ys)
        xd = np.concatenate([with_context(f[name])[~np.isnan(f0)] for f, f0 in dev])
        yd = np.log2(np.concatenate([f0[~np.isnan(f0)] for _, f0 in dev]))
        err = predict(xd) - yd
        r2 = 1 - np.sum(err ** 2) / np.sum((yd - yd.mean()) ** 2)
        results[f"probe_{name}"] = {"r2": float(r2), "rms_semitones": float(12 * np.sqrt(np.mean(err ** 2))),
                                    "fit_frames": int(len(ys)), "dev_frames": int(len(yd))}
    orig = np.concatenate([f0 for _, f0 in dev])
    rec = np.concatenate([f["f0_reconstruction"] for f, _ in dev])
    both = ~np.isnan(orig) & ~np.isnan(rec)
    semis = 12 * np.abs(np.log2(rec[both] / orig[both]))
    results["tracking"] = {
        "voiced_original": int((~np.isnan(orig)).sum()), "voiced_reconstruction": int((~np.isnan(rec)).sum()),
        "voicing_agreement": float(np.mean(np.isnan(orig) == np.isnan(rec))),
        "log_f0_correlation": float(np.corrcoef(np.log2(orig[both]), np.log2(rec[both]))[0, 1]),
        "within_1_semitone": float(np.mean(semis <= 1.0)), "frames_voiced_in_both": int(both.sum()),
        "f0_std_semitones_original": float(12 * np.std(np.log2(orig[both]))),
        "f0_std_semitones_reconstruction": float(12 * np.std(np.log2(rec[both]))),
    }
    stage_rate = RATE / HOP * codec.config.decoder_rates[0]
    spectra = {}
    for key in ("original", "reconstruction"):
        total = 0
        for f, _ in dev:
            signal = f["audio"] if key == "original" else f["reconstruction"]
            frames = [signal[i:i + RATE] for i in range(0, len(signal) - RATE + 1, RATE // 2)]
            if frames:
                total = total + np.sum([np.abs(np.fft.rfft(x * np.hanning(RATE))) ** 2 for x in frames], axis=0)
        spectra[key] = total
    comb = []
    for k in range(1, int(RATE / 2 / stage_rate)):
        bin_ = int(round(k * stage_rate))
        row = {"hz": bin_}
        for key, spectrum in spectra.items():
            row[key] = float(10 * np.log10(spectrum[bin_ - 2:bin_ + 3].max() / np.median(spectrum[bin_ - 30:bin_ + 30])))
        comb.append(row)
    results["comb"] = {"stage_rate_hz": stage_rate, "peaks_db": comb,
                       "mean_peak_db": {key: float(np.mean([r[key] for r in comb])) for key in spectra}}
    results["comb_notch_pesq_wb"] = notch_pesq([(f["reconstruction"], f["audio"]) for f, _ in dev], round(RATE / stage_rate))
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
