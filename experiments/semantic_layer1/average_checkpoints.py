"""Averages the weights of exported codec folders of one run (a tail average of its checkpoints, which evens out the
noise of small-batch steps); every tensor that is not floating point (codes, groups) must be equal in all of them:

    python experiments/semantic_layer1/average_checkpoints.py runs/a runs/b runs/c --output runs/average

The output folder is a copy of the first with `model.safetensors` replaced. This is an experiment, not part of the
package.
"""

import argparse
import shutil

import torch
from safetensors.torch import load_file, save_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="exported codec folders (export_checkpoint.py)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    weights = [load_file(f"{folder}/model.safetensors") for folder in args.folders]
    keys = set(weights[0])
    if any(set(w) != keys for w in weights):
        raise SystemExit("the folders hold different tensors: not checkpoints of one codec")
    averaged, changed = {}, 0
    for key in sorted(keys):
        tensors = [w[key] for w in weights]
        if tensors[0].is_floating_point():
            averaged[key] = torch.stack([t.double() for t in tensors]).mean(0).to(tensors[0].dtype)
            changed += any(not torch.equal(t, tensors[0]) for t in tensors)
        elif all(torch.equal(t, tensors[0]) for t in tensors):
            averaged[key] = tensors[0]
        else:
            raise SystemExit(f"{key} differs between the folders and cannot be averaged")
    shutil.copytree(args.folders[0], args.output, dirs_exist_ok=True)
    save_file(averaged, f"{args.output}/model.safetensors", metadata={"format": "pt"})
    print(f"{args.output}: mean of {len(weights)} folders, {changed} of {len(keys)} tensors differed")


if __name__ == "__main__":
    main()
