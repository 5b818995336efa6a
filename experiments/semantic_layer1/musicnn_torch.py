"""Check of the torch musicnn teacher (`llm_codec.training.music_tagger`, `teachers.MusicnnTeacher`) against the
musicnn package's own TensorFlow graph, clip by clip.

The reference is the feature file of `musicnn_features.py` (run in its TensorFlow venv): per clip, the mean over 3 s
patches of the 50 tag probabilities and of the 200-d penultimate features. This script recomputes both with the
torch network, whose weights come from the same wheel's checkpoint (`pip install --no-deps musicnn==0.1.0`, no
TensorFlow), for a seeded random sample of the clips:

    python experiments/semantic_layer1/musicnn_torch.py --check /tmp/musicnn/features.npz --clips 40

This is an experiment, not part of the package.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from llm_codec.audio_io import read_audio
from llm_codec.training.teachers import MusicnnTeacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", default="/tmp/musicnn/features.npz",
                        help="features of musicnn_features.py (TensorFlow) to compare with")
    parser.add_argument("--clips", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    teacher = MusicnnTeacher.from_pretrained()
    reference = np.load(args.check, allow_pickle=True)
    rng = np.random.default_rng(0)
    worst_tag = worst_pen = 0.0
    cosines, seconds = [], 0.0
    for i in rng.choice(len(reference["paths"]), args.clips, replace=False):
        audio = torch.from_numpy(read_audio(str(reference["paths"][i]), 16000))[None]
        began = time.perf_counter()
        tags, penultimate = (x[0].mean(0) for x in teacher.patch_outputs(audio))
        seconds += time.perf_counter() - began
        worst_tag = max(worst_tag, float((tags - torch.from_numpy(reference["tags"][i])).abs().max()))
        ref = torch.from_numpy(reference["penultimate"][i])
        worst_pen = max(worst_pen, float((penultimate - ref).abs().max() / ref.abs().max()))
        cosines.append(float(F.cosine_similarity(penultimate, ref, dim=0)))
    print(f"{args.clips} clips against TensorFlow: largest tag-probability difference {worst_tag:.2e}, largest "
          f"penultimate difference {worst_pen:.2e} (relative to the clip's largest value), cosine min {min(cosines):.6f}; "
          f"{seconds / args.clips * 1000:.0f} ms per clip (one thread)")


if __name__ == "__main__":
    main()
