"""Probe, step 1 of 2: clip features of the musicnn music taggers (MagnaTagATune), for `musicnn_probe.py`.

musicnn 0.1.0 (PyPI, ISC licence, Universitat Pompeu Fabra) ships its trained TensorFlow checkpoints inside the
wheel, so it is an offline teacher candidate for what the speaker encoder and Whisper miss (instrument timbre). This
script runs the package's own graph in a separate environment with TensorFlow 2.15 (the package needs
`tf.compat.v1.layers`), not in the project's venv:

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.15.1 "numpy<2" librosa soundfile soxr
    /tmp/tfenv/bin/pip install --no-deps musicnn==0.1.0
    /tmp/tfenv/bin/python experiments/semantic_layer1/musicnn_features.py --out /tmp/musicnn/features.npz

The input is the package's: 16 kHz, 512-point FFT, hop 256, 96 mel bands (librosa), log10(1 + 10000 x), patches of
187 frames (3 s). A clip shorter than a patch is repeated to fill it (how the models were trained: `repeat-pad`); a
longer one is cut into consecutive patches (the last one ending at the clip's end). Per patch it stores the 50 tag
probabilities and the 200-d penultimate layer; per clip, their means over patches.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr
import tensorflow as tf
from musicnn import configuration, models

tf.compat.v1.disable_eager_execution()
FRAMES = 187
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def log_mel(path: Path) -> np.ndarray:
    """`(frames, 96)` log-compressed mel spectrogram, as the package computes it."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(1)
    if rate != configuration.SR:
        audio = soxr.resample(audio, rate, configuration.SR)
    mel = librosa.feature.melspectrogram(y=audio, sr=configuration.SR, hop_length=configuration.FFT_HOP,
                                         n_fft=configuration.FFT_SIZE, n_mels=configuration.N_MELS).T
    return np.log10(10000 * mel.astype(np.float16) + 1).astype(np.float32)


def patches(mel: np.ndarray) -> np.ndarray:
    """`(patches, 187, 96)`: repeat-padded when short, consecutive patches when long."""
    if len(mel) < FRAMES:
        mel = np.tile(mel, (int(np.ceil(FRAMES / max(len(mel), 1))), 1))[:FRAMES]
    starts = list(range(0, len(mel) - FRAMES + 1, FRAMES))
    if starts[-1] + FRAMES < len(mel):
        starts.append(len(mel) - FRAMES)
    return np.stack([mel[s:s + FRAMES] for s in starts])


def clip_paths(args) -> list[Path]:
    paths = []
    for folder in args.folders:
        paths += sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    for manifest in args.manifests:
        root = Path(manifest).parent
        for line in Path(manifest).read_text().splitlines():
            row = json.loads(line)
            path = Path(row["path"])
            paths.append(path if path.is_absolute() else (root / path))
    return list(dict.fromkeys(p.resolve() for p in paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="MTT_musicnn", choices=("MTT_musicnn", "MSD_musicnn"))
    parser.add_argument("--folders", nargs="*", default=["data/tasks", "llm_codec/assets/demo_clips"])
    parser.add_argument("--manifests", nargs="*", default=["data/semantic_fit_balanced.jsonl"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    paths = clip_paths(args)
    print(f"{len(paths)} clips")
    labels = configuration.MTT_LABELS if args.model.startswith("MTT") else configuration.MSD_LABELS
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, FRAMES, configuration.N_MELS])
        training = tf.compat.v1.placeholder(tf.bool)
        logits, *_, penultimate = models.define_model(x, training, args.model, len(labels))
        tags = tf.nn.sigmoid(logits)
    session = tf.compat.v1.Session(config=tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1,
                                                                     inter_op_parallelism_threads=1))
    tf.compat.v1.train.Saver().restore(session, os.path.join(os.path.dirname(models.__file__), args.model) + "/")
    store = {}
    for i, path in enumerate(paths):
        batch = patches(log_mel(path))
        tag, pen = session.run([tags, penultimate], feed_dict={x: batch, training: False})
        store[str(path)] = (tag.astype(np.float32), pen.astype(np.float32))
        if i % 200 == 0:
            top = labels[int(tag.mean(0).argmax())]
            print(f"{i}/{len(paths)} {path.name}: {len(batch)} patches, top tag {top!r}", flush=True)
    keys = list(store)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, paths=np.array(keys), labels=np.array(labels),
                        tags=np.stack([store[k][0].mean(0) for k in keys]),
                        penultimate=np.stack([store[k][1].mean(0) for k in keys]),
                        patch_tags=np.array([store[k][0] for k in keys], dtype=object),
                        patch_penultimate=np.array([store[k][1] for k in keys], dtype=object))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
