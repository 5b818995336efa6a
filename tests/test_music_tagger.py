"""The musicnn music-tagger teacher: the tensor-bundle reader, the torch network against the package's TensorFlow
outputs, and its errors."""

import importlib.metadata
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_codec.audio_io import read_audio
from llm_codec.training.music_tagger import (
    MUSICNN_SHA256,
    MusicnnTagger,
    find_musicnn_checkpoint,
    musicnn_log_mel,
    musicnn_patches,
    read_tensor_bundle,
)
from llm_codec.training.teachers import MusicnnTeacher, TeacherUnavailable, load_teacher

from .test_training import needs_musicnn

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "musicnn_reference.json").read_text())


def _varint(value: int) -> bytes:
    out = b""
    while True:
        byte, value = value & 0x7F, value >> 7
        out += bytes([byte | (0x80 if value else 0)])
        if not value:
            return out


def _block(entries) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1) + b"\x00" + b"\x00" * 4  # one restart point, no compression, crc


def write_tensor_bundle(prefix: str, tensors: dict[str, np.ndarray]) -> None:
    """A minimal TensorFlow tensor bundle (float32 only), written by hand as the format describes it."""
    data, entries = b"", [(b"", b"\x08\x01")]  # the header entry comes first and is skipped by the reader
    for name in sorted(tensors):
        array = np.array(tensors[name], dtype=np.float32, order="C")
        shape = b"".join(b"\x12" + _varint(len(d)) + d for d in (b"\x08" + _varint(n) for n in array.shape))
        entry = b"\x08\x01" + b"\x12" + _varint(len(shape)) + shape + b"\x20" + _varint(len(data))
        entry += b"\x28" + _varint(array.nbytes)
        entries.append((name.encode(), entry))
        data += array.tobytes()
    data_block = _block(entries)
    handle = _varint(0) + _varint(len(data_block) - 5)
    index_block = _block([(entries[-1][0], handle)])
    footer = _varint(0) + _varint(0) + _varint(len(data_block)) + _varint(len(index_block) - 5)
    footer = footer.ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(prefix + ".index").write_bytes(data_block + index_block + footer)
    Path(prefix + ".data-00000-of-00001").write_bytes(data)


def test_tensor_bundle_reader_reads_names_shapes_and_values(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"conv2d/kernel": rng.normal(size=(7, 3, 1, 4)), "dense/bias": rng.normal(size=(5,)),
               "scalar": np.array(2.5)}
    write_tensor_bundle(str(tmp_path / "ckpt"), tensors)
    read = read_tensor_bundle(str(tmp_path / "ckpt"))
    assert set(read) == set(tensors)
    for name, value in tensors.items():
        assert read[name].shape == value.shape and np.allclose(read[name], value.astype(np.float32))
    (tmp_path / "bad.index").write_bytes(b"\x00" * 64)
    (tmp_path / "bad.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(ValueError, match="tensor-bundle"):
        read_tensor_bundle(str(tmp_path / "bad"))


def test_log_mel_and_patches_shapes_and_errors():
    mel = musicnn_log_mel(np.zeros(16000, dtype=np.float32))
    assert mel.shape == (63, 96) and torch.all(mel == 0)  # centred frames, one per 256 samples
    short = musicnn_patches(torch.arange(50.0)[:, None].expand(50, 96))
    assert short.shape == (1, 187, 96) and short[0, 50, 0] == 0 and short[0, 100, 0] == 0  # repeated, not padded
    long = musicnn_patches(torch.zeros(400, 96))
    assert long.shape == (3, 187, 96)  # two whole patches and one ending at the clip's end
    with pytest.raises(ValueError, match="mono audio"):
        musicnn_log_mel(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="at least one sample"):
        musicnn_log_mel(np.zeros(0, dtype=np.float32))


def test_missing_package_names_the_pip_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(TeacherUnavailable, match=r"pip install --no-deps musicnn==0\.1\.0"):
        load_teacher("musicnn")


@needs_musicnn
def test_musicnn_teacher_matches_the_packages_tensorflow_outputs():
    teacher = load_teacher("musicnn")
    assert isinstance(teacher, MusicnnTeacher) and teacher.dim == 200
    assert not any(p.requires_grad for p in teacher.parameters())
    for clip in REFERENCE["clips"]:
        audio = torch.from_numpy(read_audio(str(ROOT / clip["path"]), 16000))[None, None]
        tags, features = teacher.patch_outputs(audio)
        expected_tags = torch.tensor(clip["patch_tags"])[None]
        expected = torch.tensor(clip["patch_penultimate"])[None]
        assert tags.shape == expected_tags.shape and features.shape == expected.shape, clip["path"]
        assert torch.allclose(tags, expected_tags, atol=1e-4), clip["path"]
        assert (features - expected).abs().max() <= 1e-4 * expected.abs().max(), clip["path"]
    speech = torch.from_numpy(read_audio(str(ROOT / "llm_codec/assets/example_speech.flac"), 16000))[None, None]
    assert teacher.embed(speech).shape == (1, 200) and teacher.features(speech).shape == (1, 2, 200)  # 5.6 s


@needs_musicnn
def test_musicnn_refuses_a_changed_checkpoint(tmp_path):
    source = find_musicnn_checkpoint()
    for name in MUSICNN_SHA256:
        shutil.copy(source + name, tmp_path / name)
    data = bytearray((tmp_path / ".data-00000-of-00001").read_bytes())
    data[1000] ^= 0xFF
    (tmp_path / ".data-00000-of-00001").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        MusicnnTeacher.from_pretrained(tmp_path)
    assert isinstance(MusicnnTagger.from_checkpoint(str(tmp_path) + "/", check_sha256=False), MusicnnTagger)


def test_stft_zero_padding_is_torch_centred_constant_padding():
    from llm_codec.mel import stft

    audio = torch.randn(2, 3000, generator=torch.Generator().manual_seed(0))
    window = torch.hann_window(512)
    expected = torch.stft(audio, 512, 256, window=window, center=True, pad_mode="constant", return_complex=True)
    assert torch.allclose(stft(audio, 512, 256, window, pad_mode="constant"), expected, atol=1e-5)
    assert not torch.allclose(stft(audio, 512, 256, window), expected, atol=1e-5)  # reflect differs at the edges
    with pytest.raises(ValueError, match="pad_mode"):
        stft(audio, 512, 256, window, pad_mode="edge")
