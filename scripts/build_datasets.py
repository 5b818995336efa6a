#!/usr/bin/env python3
"""
Builds offline audio data for LLM-Codec from Debian packages (installed by `scripts/prepare_data.sh`).

Output (default root: `data/` in the repository; see docs/data.md):

    data/clips/<source>/.../*.flac        every clip once: 16 kHz, mono, 16-bit FLAC
    data/clips.jsonl                      one row per clip (all metadata, incl. clips excluded from the codec splits)
    data/codec_train.jsonl                clips for codec training
    data/codec_heldout.jsonl              clips whose speakers / voices / kits / instruments never occur in training
    data/tasks/<task>/<label>/*.flac      few-shot classification tasks (relative symlinks into clips/, or copies)
    data/tasks/<task>/manifest.jsonl      one row per task clip (label, group fields, codec split)
    data/tasks/drum_type/kits.json        "<label>/<file>.flac" -> drum kit (for kit-disjoint demonstrations/queries)
    data/build_failures.jsonl             every source file that was skipped, with the reason
    data/SUMMARY.md                       the summary printed at the end

Every clip is decoded (soundfile; ffmpeg for G.722 and for anything soundfile cannot read), mixed to mono, resampled
to 16 kHz with soxr (HQ), trimmed at the edges (below -50 dB of its loudest 10 ms frame, with padding) and checked:
non-finite samples, silence (peak below -50 dBFS) or a clip shorter than 0.1 s is reported and skipped. Clips are
written atomically and skipped when they already exist, so re-running is cheap and safe.

Codec split rule (also in docs/data.md) -- held out, never in codec_train:
  * fillets-ng: the Dutch big-fish voice (file names `<level>-v-*` in the `nl` folders). Dutch lines of other
    characters (neither `-m-` nor `-v-`) are excluded from both splits, since their actor is unknown and may be the
    held-out one.
  * asterisk: the Italian voice (it_IT_m_Carlo; the only male voice; note that en and es are both Allison Smith).
  * klettres / ktuberling: the languages he, hu, el, sl, nds (in both packages: one translator may have recorded both).
  * hydrogen-drumkits: the kits "The Black Pearl 1.0" (acoustic) and "HardElectro1" (electronic).
  * fluid-soundfont-gm: the General MIDI programs with program % 8 == 7 (the last program of each of the 16 GM
    families, e.g. 7 Clavinet, 71 Clarinet, 119 Reverse Cymbal).
  * the game sound effects of the sound_event task (scorched3d-data, wesnoth-1.16-data, minetest-data, freeciv-data,
    lincity-ng-data, chromium-bsu-data): all excluded from both splits, so a codec never trains on that task's clips.

Usage: python scripts/build_datasets.py [--root data] [--copy] [--only SOURCE ...] [--max-per-class 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from llm_codec.audio_io import resample

SR = 16000
REPO = Path(__file__).resolve().parents[1]

FILLETS_DIR = Path("/usr/share/games/fillets-ng/sound")
KLETTRES_DIR = Path("/usr/share/klettres")
KTUBERLING_DIR = Path("/usr/share/ktuberling/sounds")
ASTERISK_DIR = Path("/usr/share/asterisk/sounds")
HYDROGEN_DIR = Path("/usr/share/hydrogen/data/drumkits")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
SCORCHED3D_DIR = Path("/usr/share/games/scorched3d/data/globalmods")
WESNOTH_DIR = Path("/usr/share/games/wesnoth/1.16/data/core/sounds")
MINETEST_DIR = Path("/usr/share/games/minetest/games/minetest_game/mods")
FREECIV_DIR = Path("/usr/share/games/freeciv/stdsounds")
LINCITY_DIR = Path("/usr/share/games/lincity-ng/sounds")
CHROMIUM_BSU_DIR = Path("/usr/share/games/chromium-bsu/wav")

# Licences, read from /usr/share/doc/<package>/copyright (Debian bookworm). `evidence` is a string that must still be
# in that file, so a changed licence is noticed instead of silently mislabelled.
LICENSES = {
    # fillets-ng-data-*: "GNU General Public License as published by the Free Software Foundation; version 2 dated June, 1991"
    "fillets-ng-data-cs": ("GPL-2", "version 2 dated June, 1991"),
    "fillets-ng-data-nl": ("GPL-2", "version 2 dated June, 1991"),
    "klettres-data": ("GPL-2+", "License: GPL-2+"),  # "Files: *"
    "ktuberling-data": ("GPL-2+", "License: GPL-2+"),  # "Files: *"
    "asterisk-core-sounds-en-g722": ("CC-BY-SA-3.0", "License: CC-BY-SA-3.0"),  # "Files: *" (Allison Smith)
    "asterisk-core-sounds-es-g722": ("CC-BY-SA-3.0", "License: CC-BY-SA-3.0"),  # "Files: *" (Allison Smith)
    "asterisk-core-sounds-fr-g722": ("CC-BY-SA-3.0", "License: CC-BY-SA-3.0"),  # "Files: fr-*" (June Wallack)
    "asterisk-core-sounds-it-g722": ("CC-BY-3.0", "License: CC-BY-3.0"),  # "Files: it-*" (Carlo Flora)
    "asterisk-core-sounds-ru-g722": ("CC-BY-3.0", "License: CC-BY-3.0"),  # "Files: ru-*" (Maxim Topal)
    "fluid-soundfont-gm": ("MIT", "MIT license"),
    # sound_event task. wesnoth: "GNU General Public License version 2 or at your option any later version".
    "wesnoth-1.16-data": ("GPL-2+", "or at your option any later version"),
    "freeciv-data": ("GPL-2+", "License: GPL-2+"),  # "Files: *" (stdsounds: Warzone 2100 GPL release, OpenQuartz)
    # lincity-ng: "Files: *" GPL-2+; "sound effects are dual-licensed under the GNU General Public and the Creative
    # Commons Attribution Sharealike v2 license. This Debian package makes use of the GPL."
    "lincity-ng-data": ("GPL-2+", "sound effects are dual-licensed"),
    "chromium-bsu-data": ("Expat", "License:   Expat"),  # "Files: data/wav/*"
}
# Packages whose sound files have more than one licence: (path prefix under the game's folder, licence, evidence),
# first match wins, in the order of the copyright file's stanzas read backwards (the last matching stanza applies).
SOUND_EVENT_LICENSE_RULES = {
    "scorched3d-data": [("apoc/", "CC-BY-SA-3.0", "Files: data/globalmods/apoc/*"),  # "License: CC-BY-SA-3"
                        ("", "GPL-2+", "License: GPL-2+")],  # "Files: *" (the base game, mod "none")
    "minetest-data": [("tnt/sounds/", "CC0-1.0", "mtg/mods/tnt/sounds/*"),
                      ("", "CC-BY-SA-3.0", "Files: *.ogg")],  # fire, env_sounds, default: "*.ogg" / "default/*"
}
# hydrogen-drumkits: one licence per kit ("Files: drumkits/<kit>.h2drumkit" stanzas).
KIT_LICENSES = {
    "Audiophob": "CC0",
    "BJA_Pacific": "CC-BY-SA-3.0-us",
    "ColomboAcousticDrumkit": "GPL-2+ with composition exception",
    "ElectricEmpireKit": "GPL-2+",
    "ForzeeStereo": "GPL-2",
    "Gimme A Hand 1.0": "GPL-2",
    "HardElectro1": "GPL-2+",
    "Millo-Drums_v.1": "GPL-2",
    "Millo_MultiLayered2": "GPL-2",
    "Millo_MultiLayered3": "GPL-2",
    "The Black Pearl 1.0": "GPL-2",
    "VariBreaks": "GPL-2+",
    "circAfrique v4": "CC-BY-SA-3.0",
    "rumpf_kit_z01_h2": "CC-BY-3.0",
}

HELDOUT_FILLETS_SPEAKERS = {"nl_big_fish"}
HELDOUT_ASTERISK_VOICES = {"it_IT_m_Carlo"}
HELDOUT_KDE_LANGUAGES = {"he", "hu", "el", "sl", "nds"}
HELDOUT_KITS = {"The Black Pearl 1.0", "HardElectro1"}

# sound_event task: recorded sound effects of six free games, each file chosen by its name (and, for freeciv, the
# unit it is played for in stdsounds.soundspec) for one sound-event class. The game is the group key: clips of one
# game share its recording chain and sample rate (scorched3d and lincity-ng 11.025 kHz, wesnoth / minetest 44.1-48
# kHz), so demonstrations and queries from different games test the event, not the game. game -> (package, folder,
# {label: [files under the folder]}).
SOUND_EVENT_FILES = {
    "scorched3d": ("scorched3d-data", SCORCHED3D_DIR, {
        "bird": [f"none/data/wav/misc/birdchirp{i}.wav" for i in range(1, 7)]
                + [f"none/data/wav/misc/gull{i}.wav" for i in (1, 2, 4, 5)]
                + ["none/data/wav/misc/birds1.wav", "none/data/wav/misc/birds2.wav"],
        "dog": ["apoc/data/wav/misc/dog.wav", "apoc/data/wav/misc/dog2.wav", "apoc/data/wav/misc/dog3.wav",
                "none/data/wav/misc/wolf.wav"],
        "explosion": [f"none/data/wav/explosions/{n}.wav" for n in ("small", "medium", "large", "xlarge", "tank")]
                     + ["apoc/data/wav/explosions/exp.wav", "apoc/data/wav/explosions/tank.wav"],
        "gunshot": ["apoc/data/wav/shoot/machinegun.wav", "apoc/data/wav/shoot/shotgun.wav"],
        "scream": [f"apoc/data/wav/misc/scream{i}.wav" for i in range(1, 5)] + ["apoc/data/wav/misc/screaming.wav"],
        "water": ["none/data/wav/misc/oceanwaves.wav", "none/data/wav/misc/splash.wav"],
    }),
    "wesnoth": ("wesnoth-1.16-data", WESNOTH_DIR, {
        "bird": ["ambient/birds1.ogg", "ambient/birds2.ogg", "ambient/birds3.ogg"],
        "dog": [f"wolf-{kind}-{i}.ogg" for kind in ("growl", "die", "hit") for i in range(1, 5)],
        "explosion": ["explosion.ogg"],
        "fire": ["ambient/campfire.ogg"],
        "gunshot": ["gunshot.wav", "thunderstick.ogg"],
        "scream": [f"human-{who}die-{i}.ogg" for who in ("", "female-", "old-") for i in range(1, 4)],
    }),
    "minetest": ("minetest-data", MINETEST_DIR, {
        "explosion": ["tnt/sounds/tnt_explode.ogg"],
        "fire": ["fire/sounds/fire_fire.1.ogg", "fire/sounds/fire_fire.2.ogg", "fire/sounds/fire_fire.3.ogg",
                 "fire/sounds/fire_large.ogg", "fire/sounds/fire_small.ogg"],
        "water": [f"env_sounds/sounds/env_sounds_water.{i}.ogg" for i in range(1, 5)]
                 + [f"default/sounds/default_water_footstep.{i}.ogg" for i in range(1, 4)],
    }),
    "freeciv": ("freeciv-data", FREECIV_DIR, {
        "explosion": ["LrgExpl.ogg", "SmlExpl.ogg"],
        "gunshot": ["MgBar1.ogg", "MgBar2.ogg", "MgHeavy.ogg"],  # riflemen, marines, fighter (machine guns)
        "water": ["Splash.ogg", "inh2o.ogg"],  # ships: attack splash, moving in water
    }),
    "lincity-ng": ("lincity-ng-data", LINCITY_DIR, {
        "explosion": ["RocketExplosion1.wav"],
        "fire": ["Fire1.wav", "Fire2.wav", "Fire3.wav"],
        "water": [f"Water{i}.wav" for i in range(1, 6)],
    }),
    "chromium-bsu": ("chromium-bsu-data", CHROMIUM_BSU_DIR, {
        "explosion": ["boom.wav", "exploBig.wav", "exploPop.wav", "exploStd.wav"],
    }),
}
SOUND_EVENT_MAX_SECONDS = 5.0  # as ESC-50's clips; longer ambiences (birds, waves, fire) are cut, with a fade-out
SOUND_EVENT_MIN_CLIPS, SOUND_EVENT_MIN_GAMES = 6, 2  # a class needs this many clips from this many games


def heldout_program(program: int) -> bool:
    return program % 8 == 7


# General MIDI level 1 program names (0-based).
GM_NAMES = """acoustic_grand_piano bright_acoustic_piano electric_grand_piano honky_tonk_piano electric_piano_1
electric_piano_2 harpsichord clavinet celesta glockenspiel music_box vibraphone marimba xylophone tubular_bells dulcimer
drawbar_organ percussive_organ rock_organ church_organ reed_organ accordion harmonica tango_accordion
acoustic_guitar_nylon acoustic_guitar_steel electric_guitar_jazz electric_guitar_clean electric_guitar_muted
overdriven_guitar distortion_guitar guitar_harmonics acoustic_bass electric_bass_finger electric_bass_pick
fretless_bass slap_bass_1 slap_bass_2 synth_bass_1 synth_bass_2 violin viola cello contrabass tremolo_strings
pizzicato_strings orchestral_harp timpani string_ensemble_1 string_ensemble_2 synth_strings_1 synth_strings_2
choir_aahs voice_oohs synth_voice orchestra_hit trumpet trombone tuba muted_trumpet french_horn brass_section
synth_brass_1 synth_brass_2 soprano_sax alto_sax tenor_sax baritone_sax oboe english_horn bassoon clarinet piccolo
flute recorder pan_flute blown_bottle shakuhachi whistle ocarina lead_square lead_sawtooth lead_calliope lead_chiff
lead_charang lead_voice lead_fifths lead_bass_lead pad_new_age pad_warm pad_polysynth pad_choir pad_bowed pad_metallic
pad_halo pad_sweep fx_rain fx_soundtrack fx_crystal fx_atmosphere fx_brightness fx_goblins fx_echoes fx_sci_fi sitar
banjo shamisen koto kalimba bagpipe fiddle shanai tinkle_bell agogo steel_drums woodblock taiko_drum melodic_tom
synth_drum reverse_cymbal guitar_fret_noise breath_noise seashore bird_tweet telephone_ring helicopter applause
gunshot""".split()
assert len(GM_NAMES) == 128

# Instrument-classification task: label -> GM program.
INSTRUMENT_TASK = {
    "piano": 0, "vibraphone": 11, "organ": 19, "acoustic_guitar": 24, "electric_bass": 33, "violin": 40, "cello": 42,
    "trumpet": 56, "trombone": 57, "saxophone": 65, "clarinet": 71, "flute": 73,
}
# Playable MIDI pitch range per program (rough, from the instruments' usual ranges); default per GM family.
PITCH_RANGES = {
    40: (55, 88), 41: (48, 79), 42: (36, 67), 43: (28, 55), 46: (36, 84), 47: (40, 55),
    56: (55, 82), 57: (40, 70), 58: (28, 58), 59: (55, 82), 60: (41, 72),
    64: (56, 87), 65: (49, 80), 66: (44, 75), 67: (36, 67), 68: (58, 89), 69: (52, 81), 70: (34, 65), 71: (50, 86),
    72: (74, 100), 76: (60, 84), 77: (55, 84), 79: (60, 84),
}
FAMILY_RANGES = {0: (36, 84), 1: (48, 84), 2: (36, 84), 3: (40, 76), 4: (28, 55), 9: (60, 93), 14: (48, 72), 15: (48, 72)}
NOTE_PITCHES = 8
NOTE_VELOCITIES = (50, 80, 110)
NOTE_ON_MS, NOTE_CLIP_MS, NOTE_SLOT_MS = 1500, 2000, 2300  # hold 1.5 s, clip 2.0 s (0.5 s release), next note at 2.3 s

DRUM_LABEL_RULES = [  # checked in order on the lower-cased instrument name from drumkit.xml
    ("kick", r"kick|bass ?drum|\bbd\b"),
    ("hihat", r"hi-?hat|\bhh\b|\bhat\b"),
    ("cymbal", r"crash|ride|cymbal|china|splash"),
    ("snare", r"snare"),
    ("tom", r"\btom"),
    ("clap", r"clap"),
    ("cowbell", r"cowbell"),
]

FAILURES: list[dict] = []


# --------------------------------------------------------------------------------------------------------------------
# audio


def _ffmpeg_decode(path: Path, fmt: str | None = None) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (run scripts/prepare_data.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "decoded.wav"
        cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y"] + (["-f", fmt] if fmt else []) + ["-i", str(path), "-c:a", "pcm_f32le", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"ffmpeg failed: {proc.stderr.strip()[-300:]}")
        data, rate = sf.read(str(out), dtype="float32", always_2d=True)
    return data, rate


def g722_batch(paths: list[Path], out_dir: Path) -> dict[Path, Path]:
    """
    Decodes many .g722 files with ONE ffmpeg process (ffmpeg's start-up dominates per-file calls: ~10x faster).
    Returns {source: decoded wav} for the ones that came out; on any error returns {} and the caller decodes file by
    file, so a bad file is still reported on its own.
    """
    if not paths or shutil.which("ffmpeg") is None:
        return {}
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y"]
    for path in paths:
        cmd += ["-f", "g722", "-i", str(path)]
    outs = [out_dir / f"{i}.wav" for i in range(len(paths))]
    for i, out in enumerate(outs):
        cmd += ["-map", f"{i}:a", "-c:a", "pcm_s16le", str(out)]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        return {}
    return {path: out for path, out in zip(paths, outs) if out.is_file()}


def decode(path: Path, decoder: str = "auto", predecoded: Path | None = None) -> tuple[np.ndarray, int]:
    """-> (mono float32 samples, original rate)."""
    if predecoded is not None:
        data, rate = sf.read(str(predecoded), dtype="float32", always_2d=True)
    elif decoder == "g722":
        data, rate = _ffmpeg_decode(path, "g722")
    else:
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as error:  # a format libsndfile does not know: let ffmpeg try
            try:
                data, rate = _ffmpeg_decode(path)
            except Exception as error2:
                raise RuntimeError(f"soundfile: {error}; {error2}") from None
    return data.mean(axis=1).astype(np.float32), int(rate)


def to_16k(mono: np.ndarray, rate: int) -> np.ndarray:
    if rate != SR:
        mono = resample(mono, rate, SR).astype(np.float32)
    return mono


def trim_edges(x: np.ndarray, rel_db: float = -50.0, pad_start: float = 0.05, pad_end: float = 0.1) -> np.ndarray:
    frame = SR // 100
    n = len(x) // frame
    if n < 2:
        return x
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    loud = np.nonzero(rms >= rms.max() * 10 ** (rel_db / 20))[0]
    start = max(0, loud[0] * frame - int(pad_start * SR))
    end = min(len(x), (loud[-1] + 1) * frame + int(pad_end * SR))
    return x[start:end]


def fade_out(x: np.ndarray, seconds: float = 0.05) -> np.ndarray:
    n = min(len(x), int(seconds * SR))
    if n > 0:
        x = x.copy()
        x[-n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return x


def finish(x: np.ndarray, max_seconds: float | None = None, trim_start: bool = True, min_seconds: float = 0.1,
           pad_to: float | None = None) -> np.ndarray:
    """
    Checks and conditions a 16 kHz mono clip; raises ValueError for garbage. `pad_to`: a shorter clip (a one-shot drum
    sample) gets trailing zeros up to that length.
    """
    if not np.all(np.isfinite(x)):
        raise ValueError("non-finite samples")
    if len(x) == 0 or np.abs(x).max() < 10 ** (-50 / 20):
        raise ValueError("silent (peak below -50 dBFS)")
    x = x - float(np.mean(x)) if abs(float(np.mean(x))) > 0.01 else x  # strong DC offset only
    if trim_start:
        x = trim_edges(x)
    else:
        x = trim_edges(np.concatenate([np.full(SR // 100, 1.0, np.float32), x]))[SR // 100 :]  # keep the onset at 0
    if max_seconds is not None and len(x) > max_seconds * SR:
        x = fade_out(x[: int(max_seconds * SR)])
    if len(x) < min_seconds * SR:
        raise ValueError(f"too short after trimming ({len(x) / SR:.3f} s)")
    if pad_to is not None and len(x) < pad_to * SR:
        x = np.concatenate([x, np.zeros(int(pad_to * SR) - len(x), np.float32)])
    peak = float(np.abs(x).max())
    if peak > 0.999:  # resampling overshoot or hot source: scale down rather than clip
        x = x * (0.999 / peak)
    return x.astype(np.float32)


def write_flac(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    sf.write(str(tmp), x, SR, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def existing_duration(path: Path) -> float | None:
    if not path.is_file():
        return None
    try:
        info = sf.info(str(path))
        if info.samplerate == SR and info.channels == 1 and info.frames > 0:
            return info.frames / SR
    except Exception:
        pass
    path.unlink()  # unreadable leftover: rebuild it
    return None


def file_sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# sources: each yields items {"id", "orig", "decoder", "source", "license", "kind", "split", ... metadata}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def base_language(code: str) -> str:
    return re.split(r"[_@]", code)[0]


def fillets_items():
    for lang in ("cs", "nl"):
        package = f"fillets-ng-data-{lang}"
        for path in sorted(FILLETS_DIR.glob(f"**/{lang}/*.ogg")):
            level = path.relative_to(FILLETS_DIR).parts[:-2]
            parts = path.stem.split("-")
            role = parts[1] if len(parts) >= 3 else ""
            # In fillets-ng dialogue ids the 2nd field names the character: m = small fish (font_small), v = big fish
            # (font_big); checked against the dialogs.lua scripts of fillets-ng-data (1347 of 1348 ids agree).
            speaker = {"m": f"{lang}_small_fish", "v": f"{lang}_big_fish"}.get(role, f"{lang}_other_character")
            if speaker in HELDOUT_FILLETS_SPEAKERS:
                split, reason = "heldout", "held-out voice"
            elif speaker.endswith("other_character") and lang in {s.split("_")[0] for s in HELDOUT_FILLETS_SPEAKERS}:
                split, reason = "excluded", "unknown actor in the held-out voice's language"
            else:
                split, reason = "train", ""
            yield dict(
                id=f"fillets-ng/{lang}/{'/'.join(level)}/{path.stem}", orig=path, decoder="auto", source=package,
                license=LICENSES[package][0], kind="speech", language=lang, speaker=speaker, character=role or None,
                split=split, split_reason=reason,
            )


def _kde_item(package: str, prefix: str, lang_dir: str, path):
    """A KDE speech clip (klettres / ktuberling): one speaker per language folder; held-out languages are never trained on."""
    lang = base_language(lang_dir)
    held = lang in HELDOUT_KDE_LANGUAGES
    return dict(
        id=f"{prefix}/{path.stem}", orig=path, decoder="auto", source=package,
        license=LICENSES[package][0], kind="speech", language=lang, speaker=f"{package.split('-')[0]}:{lang_dir}",
        split="heldout" if held else "train", split_reason="held-out language" if held else "",
    )


def klettres_items():
    for path in sorted(KLETTRES_DIR.glob("*/*/*.ogg")):
        lang_dir, sub = path.parts[-3], path.parts[-2]
        yield _kde_item("klettres-data", f"klettres/{lang_dir}/{sub}", lang_dir, path)


def ktuberling_items():
    for path in sorted(KTUBERLING_DIR.glob("*/*")):
        if path.suffix.lower() not in {".ogg", ".wav", ".opus", ".flac"} or not path.is_file():
            continue
        lang_dir = path.parts[-2]
        yield _kde_item("ktuberling-data", f"ktuberling/{lang_dir}", lang_dir, path)


def asterisk_items():
    for voice_dir in sorted(p for p in ASTERISK_DIR.iterdir() if p.is_dir()):
        voice = voice_dir.name  # e.g. en_US_f_Allison
        lang = base_language(voice)
        package = f"asterisk-core-sounds-{lang}-g722"
        for path in sorted(voice_dir.rglob("*.g722")):
            rel = path.relative_to(voice_dir)
            if rel.parts[0] == "silence":  # pure silence files
                continue
            held = voice in HELDOUT_ASTERISK_VOICES
            yield dict(
                id=f"asterisk/{voice}/{rel.with_suffix('')}", orig=path, decoder="g722", source=package,
                license=LICENSES[package][0], kind="speech", language=lang, speaker=voice.split("_")[-1],
                split="heldout" if held else "train", split_reason="held-out voice" if held else "",
            )


def drum_label(instrument_name: str) -> str | None:
    name = instrument_name.lower()
    for label, pattern in DRUM_LABEL_RULES:
        if re.search(pattern, name):
            return label
    return None


def hydrogen_items():
    for kit_dir in sorted(p for p in HYDROGEN_DIR.iterdir() if (p / "drumkit.xml").is_file()):
        kit = kit_dir.name
        root = ET.parse(kit_dir / "drumkit.xml").getroot()
        ns = re.match(r"\{.*\}", root.tag)
        ns = ns.group(0) if ns else ""
        seen = set()
        for instrument in root.iter(f"{ns}instrument"):
            name = (instrument.findtext(f"{ns}name") or "").strip()
            for element in instrument.iter(f"{ns}filename"):
                if not element.text or element.text in seen:
                    continue
                seen.add(element.text)
                path = kit_dir / element.text
                held = kit in HELDOUT_KITS
                yield dict(
                    id=f"hydrogen/{slug(kit)}/{slug(Path(element.text).stem)}", orig=path, decoder="auto",
                    source="hydrogen-drumkits", license=KIT_LICENSES.get(kit, "UNKNOWN"), kind="drums", kit=kit,
                    instrument=name, drum_label=drum_label(name), max_seconds=4.0, min_seconds=0.01, pad_to=0.25,
                    split="heldout" if held else "train", split_reason="held-out kit" if held else "",
                )


def sound_event_license(package: str, rel: str) -> str:
    for prefix, licence, _ in SOUND_EVENT_LICENSE_RULES.get(package, []):
        if rel.startswith(prefix):
            return licence
    return LICENSES[package][0]


def sound_event_items():
    for game, (package, folder, labels) in SOUND_EVENT_FILES.items():
        if not folder.is_dir():  # package not installed: nothing from this game (a missing file is reported)
            continue
        for label, files in sorted(labels.items()):
            for rel in files:
                yield dict(
                    id=f"sound_events/{game}/{Path(rel).with_suffix('')}", orig=folder / rel, decoder="auto",
                    source=package, license=sound_event_license(package, rel), kind="sound_event", game=game,
                    sound_event=label, name=Path(rel).stem, max_seconds=SOUND_EVENT_MAX_SECONDS,
                    split="excluded", split_reason="sound_event task clip (never in codec training)",
                )


def pitch_grid(program: int) -> list[int]:
    lo, hi = PITCH_RANGES.get(program, FAMILY_RANGES.get(program // 8, (48, 79)))
    return sorted({int(round(p)) for p in np.linspace(lo, hi, NOTE_PITCHES)})


def instrument_items():
    for program in range(128):
        held = heldout_program(program)
        for pitch in pitch_grid(program):
            for velocity in NOTE_VELOCITIES:
                yield dict(
                    id=f"fluid-gm/{program:03d}_{GM_NAMES[program]}/p{pitch:03d}_v{velocity:03d}", orig=SOUNDFONT,
                    decoder="fluidsynth", source="fluid-soundfont-gm", license=LICENSES["fluid-soundfont-gm"][0],
                    kind="instrument", program=program, instrument=GM_NAMES[program], pitch=pitch, velocity=velocity,
                    split="heldout" if held else "train", split_reason="held-out GM program" if held else "",
                )


SOURCES = {
    "fillets": fillets_items, "klettres": klettres_items, "ktuberling": ktuberling_items, "asterisk": asterisk_items,
    "hydrogen": hydrogen_items, "instruments": instrument_items, "sound_events": sound_event_items,
}


# --------------------------------------------------------------------------------------------------------------------
# MIDI + fluidsynth


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def midi_file(events: list[tuple[int, bytes]], ticks_per_quarter: int = 500) -> bytes:
    """A format-0 Standard MIDI File; at the default tempo (500000 us per quarter) one tick is 1 ms."""
    track = bytearray(b"\x00\xff\x51\x03\x07\xa1\x20")  # tempo 500000 us / quarter
    now = 0
    for tick, data in sorted(events, key=lambda e: e[0]):
        track += _varlen(tick - now) + data
        now = tick
    track += b"\x00\xff\x2f\x00"  # end of track
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_quarter) + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def note_sequence(program: int, notes: list[tuple[int, int]]) -> bytes:
    """One note per NOTE_SLOT_MS: note-on, note-off after NOTE_ON_MS, All Sound Off at NOTE_CLIP_MS (no bleed)."""
    events = [(0, bytes([0xC0, program])), (0, b"\xb0\x07\x64"), (0, b"\xb0\x0a\x40"), (0, b"\xb0\x5b\x00"), (0, b"\xb0\x5d\x00")]
    for i, (pitch, velocity) in enumerate(notes):
        t = 100 + i * NOTE_SLOT_MS
        events += [(t, bytes([0x90, pitch, velocity])), (t + NOTE_ON_MS, bytes([0x80, pitch, 0])), (t + NOTE_CLIP_MS, b"\xb0\x78\x00")]
    events.append((100 + len(notes) * NOTE_SLOT_MS + 200, b"\xb0\x7b\x00"))
    return midi_file(events)


def render_midi(midi: bytes, gain: float = 1.5) -> np.ndarray:
    """Renders a MIDI file with fluidsynth and SOUNDFONT at 44.1 kHz (no reverb/chorus, `gain`), mixed to mono and
    resampled to 16 kHz with soxr: `(samples,)` float32."""
    if shutil.which("fluidsynth") is None:
        raise RuntimeError("fluidsynth is not installed (run scripts/prepare_data.sh)")
    rate = 44100
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "notes.mid", Path(tmp) / "notes.wav"
        mid.write_bytes(midi)
        cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", str(gain), "-r", str(rate), "-T", "wav", "-O", "float", "-F", str(wav), str(SOUNDFONT), str(mid)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"fluidsynth failed: {proc.stderr.strip()[-300:]}")
        data, got = sf.read(str(wav), dtype="float32", always_2d=True)
    return to_16k(data.mean(axis=1), got)


def render_program(program: int, notes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Renders the notes with fluidsynth (`render_midi`), slices one clip per note."""
    mono = render_midi(note_sequence(program, notes))
    clips = []
    for i in range(len(notes)):
        start = int((100 + i * NOTE_SLOT_MS) / 1000 * SR)
        clips.append(mono[start : start + int(NOTE_CLIP_MS / 1000 * SR)])
    return clips


# --------------------------------------------------------------------------------------------------------------------
# building


def record_of(item: dict, duration: float, orig_rate: int | None) -> dict:
    rec = {"path": f"clips/{item['id']}.flac", "duration": round(duration, 3)}
    for key, value in item.items():
        if key in {"id", "decoder", "max_seconds", "min_seconds", "pad_to"}:
            continue
        rec[key] = str(value) if isinstance(value, Path) else value
    rec["orig_rate"] = orig_rate
    return rec


def fail(item: dict, error: str) -> None:
    FAILURES.append({"id": item["id"], "orig": str(item["orig"]), "source": item["source"], "error": error})


def build_file_source(name: str, items: list[dict], root: Path) -> list[dict]:
    records, hashes = [], {}
    batch, predecoded = 64, {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, item in enumerate(tqdm(items, desc=f"{name:11s}", unit="clip", dynamic_ncols=True, mininterval=1.0)):
            if k % batch == 0:  # G.722: decode the next files that are still to be built in one ffmpeg call
                for old in predecoded.values():
                    old.unlink(missing_ok=True)
                todo = [it["orig"] for it in items[k : k + batch]
                        if it["decoder"] == "g722" and not (root / "clips" / f"{it['id']}.flac").is_file()]
                chunk_dir = Path(tmp) / str(k)
                chunk_dir.mkdir()
                predecoded = g722_batch(todo, chunk_dir)
            record = build_one(item, root, hashes, predecoded.get(item["orig"]))
            if record is not None:
                records.append(record)
    return records


def build_one(item: dict, root: Path, hashes: dict, predecoded: Path | None) -> dict | None:
    """Builds (or finds already built) the clip of one source file -> its record, or None (reported)."""
    out = root / "clips" / f"{item['id']}.flac"
    try:
        digest = file_sha1(item["orig"])
    except OSError as error:
        fail(item, f"unreadable: {error}")
        return None
    if digest in hashes:  # byte-identical copy (e.g. sr vs sr@latin, kits sharing a sample)
        fail(item, f"duplicate of {hashes[digest]}")
        return None
    hashes[digest] = item["id"]
    duration, orig_rate = existing_duration(out), None
    if duration is None:
        try:
            mono, orig_rate = decode(item["orig"], item["decoder"], predecoded)
            x = finish(to_16k(mono, orig_rate), item.get("max_seconds"), min_seconds=item.get("min_seconds", 0.1),
                       pad_to=item.get("pad_to"))
        except Exception as error:
            fail(item, str(error))
            return None
        write_flac(out, x)
        duration = len(x) / SR
    else:
        try:
            orig_rate = 16000 if item["decoder"] == "g722" else sf.info(str(item["orig"])).samplerate
        except Exception:
            orig_rate = None
    return record_of(item, duration, orig_rate)


def build_instruments(items: list[dict], root: Path) -> list[dict]:
    by_program = defaultdict(list)
    for item in items:
        by_program[item["program"]].append(item)
    records = []
    for program, group in tqdm(sorted(by_program.items()), desc="instruments", unit="program", dynamic_ncols=True):
        outs = [root / "clips" / f"{item['id']}.flac" for item in group]
        durations = [existing_duration(out) for out in outs]
        if any(d is None for d in durations):
            try:
                clips = render_program(program, [(item["pitch"], item["velocity"]) for item in group])
            except Exception as error:
                for item in group:
                    fail(item, str(error))
                continue
            for k, (item, out, clip) in enumerate(zip(group, outs, clips)):
                if durations[k] is not None:
                    continue
                try:
                    x = finish(clip, trim_start=False)
                except Exception as error:
                    fail(item, str(error))
                    continue
                write_flac(out, x)
                durations[k] = len(x) / SR
        records += [record_of(item, d, 44100) for item, d in zip(group, durations) if d is not None]
    return records


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------------------------------------
# tasks


def stable_order(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: hashlib.sha1(r["path"].encode()).hexdigest())


def cap_balanced(rows: list[dict], cap: int, by: str) -> list[dict]:
    """At most `cap` rows, taken round-robin over the values of `by` (e.g. source), in a fixed pseudo-random order."""
    if len(rows) <= cap:
        return rows
    groups = defaultdict(list)
    for row in stable_order(rows):
        groups[row[by]].append(row)
    out, queues = [], [groups[k] for k in sorted(groups)]
    while len(out) < cap:
        for queue in queues:
            if queue and len(out) < cap:
                out.append(queue.pop(0))
    return out


def make_task(root: Path, task: str, labelled: dict[str, list[dict]], copy: bool, extra_fields: tuple[str, ...]) -> dict:
    task_dir = root / "tasks" / task
    if task_dir.exists():
        shutil.rmtree(task_dir)
    rows = []
    for label in sorted(labelled):
        for rec in sorted(labelled[label], key=lambda r: r["path"]):
            name = rec["path"][len("clips/") : -len(".flac")].replace("/", "__") + ".flac"
            dest = task_dir / label / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if copy:
                shutil.copy2(root / rec["path"], dest)
            else:
                os.symlink(os.path.relpath(root / rec["path"], dest.parent), dest)
            row = {"path": f"tasks/{task}/{label}/{name}", "clip": rec["path"], "label": label, "duration": rec["duration"],
                   "source": rec["source"], "license": rec["license"], "codec_split": rec["split"]}
            row.update({k: rec.get(k) for k in extra_fields})
            rows.append(row)
    write_jsonl(task_dir / "manifest.jsonl", rows)
    return {"classes": {label: len(v) for label, v in sorted(labelled.items())}, "rows": rows}


def build_tasks(records: list[dict], root: Path, copy: bool, max_per_class: int) -> dict:
    tasks = {}
    speech = [r for r in records if r["kind"] == "speech"]

    # language_id: klettres + ktuberling + asterisk, 0.5-4 s, >= 10 clips per language.
    by_lang = defaultdict(list)
    for r in speech:
        if r["source"].startswith(("klettres", "ktuberling", "asterisk")) and 0.5 <= r["duration"] <= 4.0:
            by_lang[r["language"]].append(r)
    langs = {k: cap_balanced(v, max_per_class, "source") for k, v in by_lang.items() if len(v) >= 10}
    tasks["language_id"] = make_task(root, "language_id", langs, copy, ("language", "speaker"))
    tasks["language_id"]["dropped"] = {k: len(v) for k, v in by_lang.items() if len(v) < 10}

    # speaker_id: fillets-ng small/big fish voices per language, 1-5 s.
    by_speaker = defaultdict(list)
    for r in speech:
        if r["source"].startswith("fillets") and not r["speaker"].endswith("other_character") and 1.0 <= r["duration"] <= 5.0:
            by_speaker[r["speaker"]].append(r)
    speakers = {k: cap_balanced(v, max_per_class, "language") for k, v in by_speaker.items()}
    tasks["speaker_id"] = make_task(root, "speaker_id", speakers, copy, ("language", "speaker", "character"))

    # drum_type: hydrogen kits, labels from drumkit.xml instrument names; classes in >= 3 kits with >= 10 clips.
    by_drum = defaultdict(list)
    for r in records:
        if r["kind"] == "drums" and r.get("drum_label"):
            by_drum[r["drum_label"]].append(r)
    drums = {k: v for k, v in by_drum.items() if len(v) >= 10 and len({r["kit"] for r in v}) >= 3}
    tasks["drum_type"] = make_task(root, "drum_type", drums, copy, ("kit", "instrument"))
    kits = {row["path"][len("tasks/drum_type/") :]: row["kit"] for row in tasks["drum_type"]["rows"]}
    (root / "tasks" / "drum_type" / "kits.json").write_text(json.dumps(kits, indent=1, ensure_ascii=False) + "\n")
    tasks["drum_type"]["dropped"] = {k: len(v) for k, v in by_drum.items() if k not in drums}
    tasks["drum_type"]["groups_per_class"] = ("kits", {k: len({r["kit"] for r in v}) for k, v in sorted(drums.items())})

    # instrument: rendered GM notes of the chosen programs.
    program_label = {p: label for label, p in INSTRUMENT_TASK.items()}
    by_inst = defaultdict(list)
    for r in records:
        if r["kind"] == "instrument" and r["program"] in program_label:
            by_inst[program_label[r["program"]]].append(r)
    tasks["instrument"] = make_task(root, "instrument", by_inst, copy, ("program", "pitch", "velocity"))

    # sound_event: game sound effects labelled by file name; classes with >= 6 clips from >= 2 games (group key: game).
    by_event = defaultdict(list)
    for r in records:
        if r["kind"] == "sound_event":
            by_event[r["sound_event"]].append(r)
    events = {k: v for k, v in by_event.items()
              if len(v) >= SOUND_EVENT_MIN_CLIPS and len({r["game"] for r in v}) >= SOUND_EVENT_MIN_GAMES}
    tasks["sound_event"] = make_task(root, "sound_event", events, copy, ("game", "name"))
    tasks["sound_event"]["dropped"] = {k: len(v) for k, v in by_event.items() if k not in events}
    tasks["sound_event"]["groups_per_class"] = ("games", {k: len({r["game"] for r in v}) for k, v in sorted(events.items())})
    return tasks


# --------------------------------------------------------------------------------------------------------------------
# summary


def package_version(package: str) -> str:
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def check_licenses() -> list[str]:
    problems = []
    evidences = [(package, name, evidence) for package, (name, evidence) in LICENSES.items()]
    evidences += [(package, name, evidence) for package, rules in SOUND_EVENT_LICENSE_RULES.items() for _, name, evidence in rules]
    for package, name, evidence in evidences:
        copyright_file = Path("/usr/share/doc") / package / "copyright"
        if copyright_file.is_file() and evidence not in copyright_file.read_text(errors="replace"):
            problems.append(f"{package}: '{evidence}' not found in {copyright_file} (licence {name} may have changed)")
    hydrogen = Path("/usr/share/doc/hydrogen-drumkits/copyright")
    if hydrogen.is_file():
        text = hydrogen.read_text(errors="replace")
        for name in set(KIT_LICENSES.values()):
            if f"License: {name}" not in text:
                problems.append(f"hydrogen-drumkits: 'License: {name}' not found in {hydrogen}")
    return problems


def summarize(records: list[dict], tasks: dict, root: Path) -> str:
    lines = ["# Offline audio data (built by scripts/build_datasets.py)", "",
             f"All clips: 16 kHz mono FLAC under `{root}/clips/`. Numbers measured on the built clips (after edge trimming).", "",
             "## Sources", "", "| source package | version | licence | clips | minutes | train min | held-out min | excluded min |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    by_source = defaultdict(list)
    for r in records:
        by_source[r["source"]].append(r)
    total = Counter()
    for source in sorted(by_source):
        rows = by_source[source]
        mins = {s: sum(r["duration"] for r in rows if r["split"] == s) / 60 for s in ("train", "heldout", "excluded")}
        licences = ", ".join(sorted({r["license"] for r in rows}))
        allm = sum(mins.values())
        total.update({"clips": len(rows), "min": allm, **mins})
        lines.append(f"| {source} | {package_version(source)} | {licences} | {len(rows)} | {allm:.1f} | {mins['train']:.1f} | {mins['heldout']:.1f} | {mins['excluded']:.1f} |")
    lines.append(f"| **total** | | | {total['clips']} | {total['min']:.1f} | {total['train']:.1f} | {total['heldout']:.1f} | {total['excluded']:.1f} |")
    n_train = sum(r["split"] == "train" for r in records)
    n_held = sum(r["split"] == "heldout" for r in records)
    lines += ["", f"codec_train.jsonl: {n_train} clips, {total['train']:.1f} min; codec_heldout.jsonl: {n_held} clips, {total['heldout']:.1f} min.", ""]
    lines += ["## Tasks (`tasks/<task>/<label>/*.flac`)", ""]
    for task, info in tasks.items():
        counts = info["classes"]
        lines.append(f"### {task}: {len(counts)} classes, {sum(counts.values())} clips")
        lines.append("")
        group_name, groups = info.get("groups_per_class", (None, {}))
        lines.append("| label | clips | minutes | codec-held-out clips |" + (f" {group_name} |" if group_name else ""))
        lines.append("|---|---:|---:|---:|" + ("---:|" if group_name else ""))
        for label, n in counts.items():
            rows = [r for r in info["rows"] if r["label"] == label]
            extra = f" {groups[label]} |" if group_name else ""
            lines.append(f"| {label} | {n} | {sum(r['duration'] for r in rows) / 60:.1f} | {sum(r['codec_split'] == 'heldout' for r in rows)} |{extra}")
        if info.get("dropped"):
            lines.append("")
            lines.append("Dropped (too few clips / groups): " + ", ".join(f"{k} ({v})" for k, v in sorted(info["dropped"].items())))
        lines.append("")
    reasons = Counter(f["source"] + ": " + re.sub(r"\S+/\S+", "…", f["error"])[:60] for f in FAILURES)
    lines += [f"## Skipped source files: {len(FAILURES)} (details in build_failures.jsonl)", ""]
    lines += [f"- {n} × {reason}" for reason, n in reasons.most_common()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO / "data", help="output root (default: data/ in the repo)")
    parser.add_argument("--copy", action="store_true", help="copy clips into task folders instead of relative symlinks")
    parser.add_argument("--only", nargs="+", choices=sorted(SOURCES), help="build only these sources (tasks use all built clips)")
    parser.add_argument("--max-per-class", type=int, default=200, help="cap per class for language_id and speaker_id")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)

    for problem in check_licenses():
        print(f"[licence] WARNING {problem}", file=sys.stderr)

    old = {r["path"]: r for r in read_jsonl(root / "clips.jsonl")}
    old_failures = read_jsonl(root / "build_failures.jsonl")
    records = []
    for name, make in SOURCES.items():
        items = list(make()) if (args.only is None or name in args.only) else []
        if args.only is not None and name not in args.only:
            prefix = {"fillets": "clips/fillets-ng/", "klettres": "clips/klettres/", "ktuberling": "clips/ktuberling/",
                      "asterisk": "clips/asterisk/", "hydrogen": "clips/hydrogen/", "instruments": "clips/fluid-gm/",
                      "sound_events": "clips/sound_events/"}[name]
            records += [r for p, r in old.items() if p.startswith(prefix)]  # keep what an earlier run built
            FAILURES.extend(f for f in old_failures if f"clips/{f['id']}".startswith(prefix))
            continue
        if not items:
            print(f"[{name}] no source files found: is its package installed? (scripts/prepare_data.sh)", file=sys.stderr)
            continue
        records += build_instruments(items, root) if name == "instruments" else build_file_source(name, items, root)

    records.sort(key=lambda r: r["path"])
    write_jsonl(root / "clips.jsonl", records)
    write_jsonl(root / "codec_train.jsonl", [r for r in records if r["split"] == "train"])
    write_jsonl(root / "codec_heldout.jsonl", [r for r in records if r["split"] == "heldout"])
    write_jsonl(root / "build_failures.jsonl", FAILURES)

    tasks = build_tasks(records, root, args.copy, args.max_per_class)
    summary = summarize(records, tasks, root)
    (root / "SUMMARY.md").write_text(summary, encoding="utf-8")
    print("\n" + summary)
    if FAILURES:
        print(f"{len(FAILURES)} source files were skipped; see {root / 'build_failures.jsonl'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
