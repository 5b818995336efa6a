"""scripts/build_datasets.py: the sound_event task builder, on fake game folders (no Debian package needed)."""

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf

from .conftest import REPO


def load_build_datasets():
    """A fresh copy of the script as a module (its FAILURES list is module state)."""
    spec = importlib.util.spec_from_file_location("build_datasets_under_test", REPO / "scripts" / "build_datasets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def noise(path, seconds, rate=22050, channels=1, amplitude=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = amplitude * rng.standard_normal((int(seconds * rate), channels)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, rate)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sound_event_task_is_built_from_named_files_and_kept_out_of_codec_training(tmp_path):
    bd = load_build_datasets()
    a, b = tmp_path / "game_a", tmp_path / "game_b"
    files = {
        "a": ("freeciv-data", a, {
            "explosion": [f"boom{i}.wav" for i in range(4)],
            "water": [f"water{i}.wav" for i in range(4)],
            "gunshot": ["gun0.wav"],
            "bird": [f"bird{i}.wav" for i in range(6)],  # one game only: dropped
        }),
        "b": ("chromium-bsu-data", b, {
            "explosion": ["sub/exp0.wav", "sub/exp1.wav", "sub/long_stereo.wav"],
            "water": ["w0.wav", "w1.wav", "silent.wav"],  # silent.wav is skipped: water keeps 6 clips
            "gunshot": ["gun1.wav", "gun2.wav"],  # 3 clips in all: dropped
        }),
        "c": ("lincity-ng-data", tmp_path / "not_installed", {"explosion": ["x.wav"]}),  # folder absent: no items
    }
    seed = 0
    for _, folder, labels in files.values():
        if folder.name == "not_installed":
            continue
        for names in labels.values():
            for name in names:
                seed += 1
                if name == "silent.wav":
                    noise(folder / name, 1.0, amplitude=0.0)
                elif name.endswith("long_stereo.wav"):
                    noise(folder / name, 8.0, rate=44100, channels=2, seed=seed)
                else:
                    noise(folder / name, 0.6 + 0.1 * (seed % 5), seed=seed)
    bd.SOUND_EVENT_FILES = files
    root = tmp_path / "data"

    assert bd.main(["--root", str(root), "--only", "sound_events"]) == 0

    rows = read_jsonl(root / "tasks" / "sound_event" / "manifest.jsonl")
    by_label = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    assert {k: len(v) for k, v in by_label.items()} == {"explosion": 7, "water": 7 - 1}
    assert {row["game"] for row in by_label["explosion"]} == {"a", "b"}
    for row in rows:
        assert row["codec_split"] == "excluded"
        assert row["license"] == {"a": "GPL-2+", "b": "Expat"}[row["game"]]
        assert row["source"] == {"a": "freeciv-data", "b": "chromium-bsu-data"}[row["game"]]
        assert (root / row["path"]).resolve() == (root / row["clip"]).resolve()  # a symlink into clips/
        info = sf.info(str(root / row["path"]))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert info.duration <= bd.SOUND_EVENT_MAX_SECONDS + 1e-6
    long = [row for row in rows if row["name"] == "long_stereo"]
    assert len(long) == 1 and long[0]["duration"] == pytest.approx(bd.SOUND_EVENT_MAX_SECONDS)

    # never in the codec splits; every built clip is listed in clips.jsonl as excluded
    assert not any(r.get("kind") == "sound_event" for r in read_jsonl(root / "codec_train.jsonl"))
    assert not any(r.get("kind") == "sound_event" for r in read_jsonl(root / "codec_heldout.jsonl"))
    clips = [r for r in read_jsonl(root / "clips.jsonl") if r["kind"] == "sound_event"]
    assert len(clips) == 7 + 6 + 3 + 6 and {r["split"] for r in clips} == {"excluded"}
    failures = read_jsonl(root / "build_failures.jsonl")
    assert [f["id"] for f in failures] == ["sound_events/b/silent"] and "silent" in failures[0]["error"]
    summary = (root / "SUMMARY.md").read_text()
    assert "### sound_event: 2 classes, 13 clips" in summary
    assert "Dropped (too few clips / groups): bird (6), gunshot (3)" in summary


def test_sound_event_licence_follows_the_copyright_stanzas():
    bd = load_build_datasets()
    assert bd.sound_event_license("scorched3d-data", "apoc/data/wav/misc/dog.wav") == "CC-BY-SA-3.0"
    assert bd.sound_event_license("scorched3d-data", "none/data/wav/misc/wolf.wav") == "GPL-2+"
    assert bd.sound_event_license("minetest-data", "tnt/sounds/tnt_explode.ogg") == "CC0-1.0"
    assert bd.sound_event_license("minetest-data", "fire/sounds/fire_fire.1.ogg") == "CC-BY-SA-3.0"
    assert bd.sound_event_license("wesnoth-1.16-data", "gunshot.wav") == "GPL-2+"
    # every listed class has clips from at least two games, and every game's package is in prepare_data.sh
    games_per_label = {}
    for game, (_, _, labels) in bd.SOUND_EVENT_FILES.items():
        for label, names in labels.items():
            assert names
            games_per_label.setdefault(label, set()).add(game)
    assert all(len(games) >= bd.SOUND_EVENT_MIN_GAMES for games in games_per_label.values())
    script = (REPO / "scripts" / "prepare_data.sh").read_text()
    assert all(package in script for package, _, _ in bd.SOUND_EVENT_FILES.values())
