#!/usr/bin/env python3
"""
Renders the main job's extra drum-hit queries from the FluidR3 General MIDI SoundFont (MIT licence, Debian package
`fluid-soundfont-gm`, installed by `scripts/prepare_data.sh`): kicks, snares and hi-hats (closed, pedal, open) from each of its
percussion kits (bank 128) and keys, written as 16 kHz FLAC to `llm_codec/assets/demo_clips/queries/<label>/`.

    python scripts/render_fluidr3_drum_hits.py [--output llm_codec/assets/demo_clips/queries] [--check]

The main job's demonstrations come from one Hydrogen kit and its other queries from two more; these kits are a
fourth source, so every query is a kit the LM was not shown. Each hit is one note (velocity 100) on the General MIDI
percussion channel, rendered alone by fluidsynth at 44.1 kHz without reverb or chorus, mixed to mono, resampled to
16 kHz and trimmed at -50 dB of its loudest 10 ms frame (at most 1 s). A hit that is the same recording as an
earlier one (normalised correlation above 0.99: many of FluidR3's kit variants share samples) are skipped, so
every written clip is a distinct sound. `--check` renders again and compares with the files on disk (exit 1 on a
difference) without writing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_datasets import SOUNDFONT, midi_file, render_midi, trim_edges  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# bank-128 presets of FluidR3_GM.sf2 (`inst 1` in fluidsynth's shell): the first of each family
KITS = {0: "Standard", 8: "Room", 16: "Power", 24: "Electronic", 25: "TR-808", 32: "Jazz", 40: "Brush",
        48: "Orchestra"}
# General MIDI percussion keys: acoustic bass drum, bass drum 1; acoustic snare, electric snare; closed, pedal and
# open hi-hat
HITS = {"kick": (35, 36), "snare": (38, 40), "hihat": (42, 44, 46)}


def render(kit: int, key: int) -> np.ndarray:
    """One hit of percussion preset `kit` at MIDI `key`: 16 kHz mono float32, edges trimmed, at most 1 s."""
    events = [(0, bytes([0xC9, kit])), (0, b"\xb9\x07\x64"), (0, b"\xb9\x5b\x00"), (0, b"\xb9\x5d\x00"),
              (100, bytes([0x99, key, 100])), (300, bytes([0x89, key, 0])), (1600, b"\xb9\x7b\x00")]
    mono = render_midi(midi_file(events), gain=1.0)[int(0.1 * 16000):]  # from the note-on
    return trim_edges(mono)[:16000]


def same_sound(a: np.ndarray, b: np.ndarray) -> bool:
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)) > 0.99


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "llm_codec" / "assets" / "demo_clips" / "queries"))
    parser.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = parser.parse_args(argv)
    if not SOUNDFONT.is_file():
        parser.error(f"{SOUNDFONT} is missing: apt-get install fluid-soundfont-gm (or run scripts/prepare_data.sh)")
    differ = 0
    for label, keys in HITS.items():
        kept: list[np.ndarray] = []
        for kit, name, key in [(kit, name, key) for key in keys for kit, name in KITS.items()]:
            audio = render(kit, key)
            if np.abs(audio).max() < 10 ** (-50 / 20):
                print(f"{label:6s} {name:10s} {key} silent, skipped")
                continue
            if any(same_sound(audio, other) for other in kept):
                print(f"{label:6s} {name:10s} {key} the same recording as an earlier one, skipped")
                continue
            kept.append(audio)
            path = Path(args.output) / label / f"FluidR3_{name}__{key}.flac"
            if args.check:
                old = sf.read(str(path), dtype="float32")[0] if path.is_file() else None
                equal = old is not None and len(old) == len(audio) and np.abs(old - audio).max() < 1e-3
                differ += not equal
                print(f"{label:6s} {name:10s} {key} {'same' if equal else 'DIFFERS'} {path}")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), audio, 16000, subtype="PCM_16")
                print(f"{label:6s} {name:10s} {key} {len(audio) / 16000:.2f} s -> {path}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
