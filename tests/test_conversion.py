import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from llm_codec import LLMCodecModel
from llm_codec.conversion.convert_llm_codec_checkpoint import ConversionError, convert_checkpoint, rename_table


@pytest.mark.parametrize("variant", ["noise", "nonoise"])
def test_official_parity(official_dir, variant):
    model = convert_checkpoint(
        official_dir / f"official_{variant}.pth",
        official_dir / f"official_{variant}_config.json",
        official_dir / "layer1_words.json",
    )
    expected = load_file(official_dir / f"expected_{variant}.safetensors")
    assert model.config.noise is (variant == "noise")
    for i in range(3):
        x = expected[f"input_{i}"]
        with torch.no_grad():
            codes = model.encode(x).audio_codes
        for j in range(3):
            assert torch.equal(codes[j], expected[f"codes_{i}_layer{j}"]), (i, j)
        reference_codes = tuple(expected[f"codes_{i}_layer{j}"] for j in range(3))
        torch.manual_seed(1234)
        with torch.no_grad():
            decoded = model.decode(reference_codes).audio_values
        assert decoded.shape == expected[f"decoded_{i}"].shape
        assert (decoded - expected[f"decoded_{i}"]).abs().max() < 1e-4


def test_codebook_sizes_and_words_come_from_the_files(official_dir):
    model = convert_checkpoint(
        official_dir / "official_noise.pth", official_dir / "official_noise_config.json", official_dir / "layer1_words.json"
    )
    state = torch.load(official_dir / "official_noise.pth", weights_only=True)["codec_model"]
    sizes = [state[f"quantizer.quantizers.{k}.codebook.weight"].shape[0] for k in range(3)]
    assert model.config.codebook_sizes == sizes
    assert len(model.config.layer1_words) == sizes[0]
    # codebooks are copied bit for bit
    assert torch.equal(model.quantizer.layers[1].codebook, state["quantizer.quantizers.1.codebook.weight"])


def test_other_layer1_size_is_read_from_checkpoint(official_dir, tmp_path):
    state = torch.load(official_dir / "official_noise.pth", weights_only=True)["codec_model"]
    state["quantizer.quantizers.0.codebook.weight"] = torch.randn(200, state["quantizer.quantizers.0.codebook.weight"].shape[1])
    torch.save({"codec_model": state}, tmp_path / "big_layer1.pth")
    model = convert_checkpoint(tmp_path / "big_layer1.pth", official_dir / "official_noise_config.json")
    assert model.config.codebook_sizes[0] == 200


def test_missing_and_extra_keys_are_named(official_dir, tmp_path):
    state = torch.load(official_dir / "official_noise.pth", weights_only=True)["codec_model"]
    broken = dict(state)
    del broken["decoder.model.6.bias"]
    torch.save({"codec_model": broken}, tmp_path / "missing.pth")
    with pytest.raises(ConversionError, match=r"decoder\.conv_out\.bias"):
        convert_checkpoint(tmp_path / "missing.pth", official_dir / "official_noise_config.json")
    extra = dict(state)
    extra["encoder.block.9.weight"] = torch.zeros(1)
    torch.save({"codec_model": extra}, tmp_path / "extra.pth")
    with pytest.raises(ConversionError, match=r"encoder\.block\.9\.weight"):
        convert_checkpoint(tmp_path / "extra.pth", official_dir / "official_noise_config.json")
    # a config that does not match the checkpoint (noise blocks absent) is caught too
    with pytest.raises(ConversionError):
        convert_checkpoint(official_dir / "official_noise.pth", official_dir / "official_nonoise_config.json")


@pytest.mark.parametrize("damage", ["zeros", "nan"])
def test_damaged_weights_are_refused(official_dir, tmp_path, damage):
    """A weight-norm direction of all zeros (0/0) or NaN weights would convert into a codec that writes full-scale
    noise: the converter refuses, naming the tensor."""
    state = torch.load(official_dir / "official_noise.pth", weights_only=True)["codec_model"]
    name = next(k for k in state if k.endswith("weight_v"))
    broken = {k: v.clone() for k, v in state.items()}
    broken[name].fill_(0.0 if damage == "zeros" else float("nan"))
    torch.save({"codec_model": broken}, tmp_path / "damaged.pth")
    with pytest.raises(ConversionError, match="NaN or infinite values"):
        convert_checkpoint(tmp_path / "damaged.pth", official_dir / "official_noise_config.json",
                           official_dir / "layer1_words.json")


class NotAWeight:
    pass


def test_pickles_that_are_not_weights_are_refused(tmp_path, official_dir):
    torch.save({"codec_model": {"x": NotAWeight()}}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match="weights-only"):
        convert_checkpoint(tmp_path / "evil.pth", official_dir / "official_noise_config.json")


def test_rename_table_is_ordered_and_covers_the_layout():
    from .conftest import tiny_config

    table = rename_table(tiny_config())
    olds = [old for old, _ in table]
    assert len(olds) == len(set(olds))
    assert ("encoder.block.0.", "encoder.conv_in.") == table[0]
    assert ("decoder.model.2.to_qkv.", "decoder.attention.qkv_proj.") in table


def test_cli_and_module_entry_points(official_dir, tmp_path):
    arguments = [
        "--checkpoint", str(official_dir / "official_noise.pth"),
        "--config", str(official_dir / "official_noise_config.json"),
        "--layer1-words", str(official_dir / "layer1_words.json"),
    ]
    for command in (
        [sys.executable, "-m", "llm_codec.cli", "convert"],
        [sys.executable, "-m", "llm_codec.conversion.convert_llm_codec_checkpoint"],
    ):
        out = tmp_path / command[-1].replace(".", "_")
        result = subprocess.run(command + arguments + ["--output", str(out)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        files = {p.name for p in out.iterdir()}
        assert "model.safetensors" in files and "README.md" in files
        assert not any(name.endswith((".bin", ".pth", ".pt")) for name in files)
        model = LLMCodecModel.from_pretrained(out).eval()
        expected = load_file(official_dir / "expected_noise.safetensors")
        codes = model.encode(expected["input_1"]).audio_codes
        assert all(torch.equal(codes[j], expected[f"codes_1_layer{j}"]) for j in range(3))


def test_cli_reports_bad_checkpoint_cleanly(tmp_path, official_dir):
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    result = subprocess.run(
        [sys.executable, "-m", "llm_codec.cli", "convert", "--checkpoint", str(tmp_path / "broken.pth"),
         "--config", str(official_dir / "official_noise_config.json"), "--output", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "weights-only" in result.stderr and "Traceback" not in result.stderr


def test_tokenizer_option_records_the_vocabulary(official_dir, tmp_path):
    from llm_codec.vocabulary import vocabulary_fingerprint

    from .conftest import tiny_tokenizer

    tokenizer = tiny_tokenizer(200)  # the small official models have 200-entry layer-2/3 codebooks
    tokenizer.save_pretrained(tmp_path / "tok")
    model = convert_checkpoint(
        official_dir / "official_noise.pth", official_dir / "official_noise_config.json",
        tokenizer_path=tmp_path / "tok", llm_name_or_path="tiny/word-level",
    )
    assert model.config.llm_vocab_fingerprint == vocabulary_fingerprint(tokenizer)
    assert model.config.llm_name_or_path == "tiny/word-level" and model.config.llm_vocab_size == 200
    model.save_pretrained(tmp_path / "out")
    assert "tiny/word-level" in (tmp_path / "out" / "README.md").read_text()


def test_conversion_never_mixes_into_or_clobbers_a_folder(official_dir, tmp_path, capsys):
    from llm_codec.cli import main as cli_main

    arguments = ["convert", "--checkpoint", str(official_dir / "official_noise.pth"),
                 "--config", str(official_dir / "official_noise_config.json"),
                 "--layer1-words", str(official_dir / "layer1_words.json")]
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    (out / "notes.txt").write_text("keep me")
    assert cli_main([*arguments, "--output", str(out)]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "config.json").read_text() == '{"mine": true}'  # untouched
    assert cli_main([*arguments, "--output", str(out), "--overwrite"]) == 0
    files = {p.name for p in out.iterdir()}
    assert "notes.txt" not in files and "model.safetensors" in files  # replaced whole: no stale files
    LLMCodecModel.from_pretrained(out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left
    inside = tmp_path / "with_input"
    inside.mkdir()
    shutil.copy(official_dir / "official_noise.pth", inside / "ckpt.pth")
    assert cli_main(["convert", "--checkpoint", str(inside / "ckpt.pth"), "--config",
                     str(official_dir / "official_noise_config.json"), "--output", str(inside), "--overwrite"]) == 2
    assert "holds the input" in capsys.readouterr().err and (inside / "ckpt.pth").is_file()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("list.json", "[]", "not a mapping"),
        ("number.yaml", "42\n", "not a mapping"),
        ("broken.json", "{", "cannot be read as JSON"),
        ("evil.yaml", 'generator: !!python/object/apply:os.system ["echo pwned"]\n', "cannot be read as YAML"),
    ],
)
def test_unreadable_configs_get_a_message(official_dir, tmp_path, capsys, name, content, message):
    from llm_codec.cli import main as cli_main

    (tmp_path / name).write_text(content)
    code = cli_main(["convert", "--checkpoint", str(official_dir / "official_noise.pth"), "--config",
                     str(tmp_path / name), "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0] and "pwned" not in error[0]


def test_a_converted_folder_loads_with_the_auto_feature_extractor_and_processor(official_dir, tmp_path):
    from transformers import AutoFeatureExtractor, AutoProcessor

    from llm_codec import LLMCodecFeatureExtractor
    from llm_codec.cli import main as cli_main

    from .conftest import tiny_tokenizer

    tiny_tokenizer(200).save_pretrained(tmp_path / "tok")
    out = tmp_path / "converted"
    assert cli_main(["convert", "--checkpoint", str(official_dir / "official_noise.pth"), "--config",
                     str(official_dir / "official_noise_config.json"), "--tokenizer", str(tmp_path / "tok"),
                     "--output", str(out)]) == 0
    assert (out / "preprocessor_config.json").is_file()
    model = LLMCodecModel.from_pretrained(out)
    for loader in (AutoFeatureExtractor, AutoProcessor):
        features = loader.from_pretrained(out)
        assert isinstance(features, LLMCodecFeatureExtractor) and features.sampling_rate == model.config.sample_rate
    card = (out / "README.md").read_text()
    metadata = card.split("---")[1]
    assert str(tmp_path) not in metadata and "base_model" not in metadata  # a local tokenizer path is not a Hub id
    assert "None" not in card
