"""Classic codecs as baselines: codec2 and Opus run through their command-line tools, with their bitstream sizes."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio_io import resample

CODEC2_MODES = ("3200", "2400", "1600", "1400", "1300", "1200", "700C", "450")
CODEC2_RATE = 8000
OPUS_MIN_KBPS = 6
DEFAULT_BASELINES = ("codec2-700C", "codec2-1200", "codec2-3200", "opus-6k")


@dataclass(frozen=True)
class Baseline:
    """
    A classic codec run through its command-line tools.

    Attributes:
        name (`str`): "codec2-<MODE>" (MODE one of `CODEC2_MODES`) or "opus-<N>k" (N >= 6 kbit/s).
        tool (`str`): "codec2" or "opus". setting (`str`): the codec2 mode or the Opus kbit/s.
        bitrate (`float`): nominal bits per second.
    """

    name: str
    tool: str
    setting: str
    bitrate: float

    @classmethod
    def parse(cls, name: str) -> "Baseline":
        """`"codec2-700C"` / `"opus-6k"` -> `Baseline`; `ValueError` naming the accepted forms otherwise."""
        match = re.fullmatch(r"codec2-(\w+)", name.strip(), flags=re.I)
        if match:
            mode = match.group(1).upper()
            if mode not in CODEC2_MODES:
                raise ValueError(f"Unknown codec2 mode in {name!r}: use one of {', '.join('codec2-' + m for m in CODEC2_MODES)}.")
            return cls(f"codec2-{mode}", "codec2", mode, float(mode.rstrip("C")))
        match = re.fullmatch(r"opus-(\d+(?:\.\d+)?)k", name.strip(), flags=re.I)
        if match:
            kbps = float(match.group(1))
            if kbps < OPUS_MIN_KBPS:
                raise ValueError(f"{name!r}: Opus does not go below {OPUS_MIN_KBPS} kbit/s; use opus-6k or more.")
            return cls(f"opus-{match.group(1)}k", "opus", match.group(1), kbps * 1000.0)
        raise ValueError(f"Unknown baseline {name!r}: use codec2-<MODE> (e.g. codec2-700C, codec2-3200) or opus-<N>k (e.g. opus-6k).")

    @property
    def tools(self) -> tuple[str, str]:
        return ("c2enc", "c2dec") if self.tool == "codec2" else ("opusenc", "opusdec")

    def unavailable(self) -> str | None:
        """Why this baseline cannot run here (`None` when its tools are on the PATH)."""
        missing = [t for t in self.tools if shutil.which(t) is None]
        if missing:
            package = "codec2" if self.tool == "codec2" else "opus-tools"
            return f"{' and '.join(missing)} not found on the PATH (install {package}, e.g. `apt-get install {package}`)"
        return None

    def run(self, reference: np.ndarray, sampling_rate: int, workdir: str | Path) -> tuple[np.ndarray, int, float]:
        """
        Encodes and decodes one clip with the tools.

        Args:
            reference (`np.ndarray` of shape `(samples,)`): audio at `sampling_rate`.
            sampling_rate (`int`): its rate (the output comes back at this rate).
            workdir (`str` or `Path`): folder for the temporary files.

        Returns:
            `(decoded (samples',) float32, bitstream bits, wall seconds of the tool processes)`.
        """
        workdir = Path(workdir)
        if self.tool == "codec2":
            narrow = resample(reference, sampling_rate, CODEC2_RATE)
            (np.clip(narrow, -1.0, 1.0) * 32767.0).round().astype("<i2").tofile(workdir / "in.raw")
            start = time.perf_counter()
            _call(["c2enc", self.setting, str(workdir / "in.raw"), str(workdir / "out.bit")])
            _call(["c2dec", self.setting, str(workdir / "out.bit"), str(workdir / "out.raw")])
            wall = time.perf_counter() - start
            decoded = np.fromfile(workdir / "out.raw", dtype="<i2").astype(np.float32) / 32768.0
            decoded = resample(decoded, CODEC2_RATE, sampling_rate).astype(np.float32)
            bits = (workdir / "out.bit").stat().st_size * 8
        else:
            sf.write(str(workdir / "in.wav"), np.clip(reference, -1.0, 1.0), sampling_rate, subtype="PCM_16")
            start = time.perf_counter()
            _call(["opusenc", "--quiet", "--bitrate", self.setting, str(workdir / "in.wav"), str(workdir / "out.opus")])
            _call(["opusdec", "--quiet", "--rate", str(sampling_rate), str(workdir / "out.opus"), str(workdir / "out.wav")])
            wall = time.perf_counter() - start
            decoded, _ = sf.read(str(workdir / "out.wav"), dtype="float32", always_2d=True)
            decoded = decoded.mean(axis=1)
            bits = ogg_audio_payload_bytes(workdir / "out.opus") * 8
        return np.ascontiguousarray(decoded, dtype=np.float32), bits, wall


def _call(command: list[str]) -> None:
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise OSError(f"`{' '.join(command)}` failed (exit {completed.returncode}): {completed.stderr.strip()[-500:]}")


def ogg_audio_payload_bytes(path: str | Path) -> int:
    """Bytes of the audio packets of a single-stream Ogg Opus file: page payloads after the two header pages."""
    data = Path(path).read_bytes()
    position, total = 0, 0
    while position + 27 <= len(data):
        if data[position : position + 4] != b"OggS":
            raise ValueError(f"{path} is not an Ogg file (no page at byte {position}).")
        sequence = int.from_bytes(data[position + 18 : position + 22], "little")
        segments = data[position + 26]
        payload = sum(data[position + 27 : position + 27 + segments])
        if sequence >= 2:  # page 0: OpusHead, page 1: OpusTags
            total += payload
        position += 27 + segments + payload
    return total


__all__ = ["CODEC2_MODES", "CODEC2_RATE", "DEFAULT_BASELINES", "OPUS_MIN_KBPS", "Baseline", "ogg_audio_payload_bytes"]
