"""`llm-codec encode` / `decode` / `reconstruct` on a tiny saved codec and a tiny local LM folder."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import soundfile as sf
import torch

from llm_codec import LLMCodecModel
from llm_codec.cli import main as cli_main

from .conftest import TINY_ARCH, TINY_WORDS, tiny_llama, tiny_tokenizer

WORDS, ARCH = TINY_WORDS, TINY_ARCH


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    lm = tiny_llama()
    tokenizer = tiny_tokenizer(200)
    lm.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    LLMCodecModel.from_language_model(lm, tokenizer, word_list=WORDS, **ARCH).save_pretrained(root / "codec")
    rng = np.random.default_rng(0)
    sf.write(root / "clip.wav", (0.2 * rng.standard_normal(2400)).astype(np.float32), 16000)
    return root


def test_encode_writes_codes_words_and_llm_tokens_and_decode_reads_them_back(folders, tmp_path, capsys):
    common = ["--model", str(folders / "codec"), "--audio", str(folders / "clip.wav")]
    assert cli_main(["encode", *common, "--lm", str(folders / "lm"), "--separator", "<sep>",
                     "--output", str(tmp_path / "codes.json")]) == 0
    data = json.loads((tmp_path / "codes.json").read_text())
    assert data["audio_length"] == 2400 and set(data["layers"]) == {"0", "1", "2"}
    layer1 = data["layers"]["0"]
    assert len(layer1["words"]) == len(layer1["codes"]) == len(layer1["token_ids"])
    assert all(w in WORDS for w in layer1["words"])
    layer2 = data["layers"]["1"]
    assert layer2["token_ids"] == layer2["codes"]  # layers 2-3 codes are the LM's token ids
    assert layer2["tokens"] == tiny_tokenizer(200).convert_ids_to_tokens(layer2["codes"])
    assert 3 in data["generation_ids"]  # the separator between layer-1 words and layers 2-3

    # decode from the codes, and from the LLM ids alone: the same audio under the same seed
    assert cli_main(["decode", "--model", str(folders / "codec"), "--codes", str(tmp_path / "codes.json"),
                     "--output", str(tmp_path / "a.wav"), "--seed", "1"]) == 0
    ids_only = {"generation_ids": data["generation_ids"], "audio_length": data["audio_length"]}
    (tmp_path / "ids.json").write_text(json.dumps(ids_only))
    assert cli_main(["decode", "--model", str(folders / "codec"), "--lm", str(folders / "lm"), "--separator", "<sep>",
                     "--codes", str(tmp_path / "ids.json"), "--output", str(tmp_path / "b.wav"), "--seed", "1"]) == 0
    a, b = sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0]
    assert a.shape == b.shape == (2400,) and np.array_equal(a, b)

    # text: what the LM reads
    capsys.readouterr()
    assert cli_main(["encode", *common, "--lm", str(folders / "lm"), "--format", "text", "--layers", "0"]) == 0
    assert capsys.readouterr().out.split() == layer1["words"]
    assert torch.is_grad_enabled()  # the commands run without gradient but leave the caller's mode alone


def test_encode_and_reconstruct_with_refined_codes(folders, tmp_path):
    common = ["--model", str(folders / "codec"), "--audio", str(folders / "clip.wav")]
    assert cli_main(["encode", *common, "--format", "codes", "--output", str(tmp_path / "plain.json")]) == 0
    assert cli_main(["encode", *common, "--format", "codes", "--refine-steps", "5",
                     "--output", str(tmp_path / "refined.json")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())["layers"]
    refined = json.loads((tmp_path / "refined.json").read_text())["layers"]
    assert refined["0"]["codes"] == plain["0"]["codes"]  # the layer-1 words stay the encoder's
    assert [len(refined[k]["codes"]) for k in "012"] == [len(plain[k]["codes"]) for k in "012"]
    assert refined["1"]["codes"] != plain["1"]["codes"] or refined["2"]["codes"] != plain["2"]["codes"]
    assert cli_main(["reconstruct", *common, "--refine-steps", "3", "--output", str(tmp_path / "r.wav")]) == 0
    assert sf.read(tmp_path / "r.wav")[0].shape == (2400,)
    with pytest.raises(SystemExit):
        cli_main(["encode", *common, "--refine-steps", "-2"])


def test_cli_errors_say_what_to_fix(folders, tmp_path, capsys):
    common = ["--model", str(folders / "codec"), "--audio", str(folders / "clip.wav")]
    assert cli_main(["encode", *common, "--format", "text"]) == 2  # no tokenizer for this codec's LM
    assert "pass --lm FOLDER" in capsys.readouterr().err
    assert cli_main(["encode", *common, "--layers", "0", "--output", str(tmp_path / "l0.json")]) == 0
    assert "token_ids" not in json.loads((tmp_path / "l0.json").read_text())["layers"]["0"]  # no tokenizer, no ids
    assert cli_main(["decode", "--model", str(folders / "codec"), "--codes", str(tmp_path / "l0.json"),
                     "--output", str(tmp_path / "x.wav")]) == 2
    assert "lacks layers [1, 2]" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert cli_main(["decode", "--model", str(folders / "codec"), "--codes", str(tmp_path / "bad.json"),
                     "--output", str(tmp_path / "x.wav")]) == 2
    assert "is not JSON" in capsys.readouterr().err
    broken = {"generation_ids": [4, 5, 6]}  # no separator
    (tmp_path / "cut.json").write_text(json.dumps(broken))
    assert cli_main(["decode", "--model", str(folders / "codec"), "--lm", str(folders / "lm"), "--separator", "<sep>",
                     "--codes", str(tmp_path / "cut.json"), "--output", str(tmp_path / "x.wav")]) == 2
    assert "separator" in capsys.readouterr().err
    assert cli_main(["reconstruct", "--model", str(tmp_path / "nowhere"), "--audio", str(folders / "clip.wav"),
                     "--output", str(tmp_path / "y.wav")]) == 2


def test_version(capsys):
    import llm_codec

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"llm-codec {llm_codec.__version__}"


def test_no_test_or_doc_reads_outside_the_repository():
    """A lone clone passes its own tests: the reference vectors are inside the repository, and nothing refers to the
    `shared/` folder that sits beside the checkout on the project's machines."""
    import re

    from .conftest import OFFICIAL, REPO

    assert OFFICIAL.is_relative_to(REPO) and (OFFICIAL / "official_noise.pth").is_file()
    places = [*REPO.glob("tests/*.py"), *REPO.glob("docs/*.md"), REPO / "README.md", *REPO.glob("scripts/*"),
              REPO / ".ci" / "run"]
    pattern = re.compile(r"""\.\./shared|/ ?["']shared["']|\{SHARED\}|LLM_CODEC_SHARED""")
    offenders = [str(p.relative_to(REPO)) for p in places
                 if p.is_file() and p.name != "test_cli.py" and pattern.search(p.read_text())]
    assert not offenders


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2, 3]", "expected a JSON object"),
        ('{"audio_length": -5, "layers": {}}', "audio_length must be a positive number"),
        ('{"audio_length": 0, "layers": {}}', "audio_length must be a positive number"),
        ('{"audio_length": 2.5, "layers": {}}', "audio_length must be a positive number"),
        ('{"layers": [1, 2]}', "`layers` must map"),
        ('{"layers": {"0": {"codes": null}}}', "non-empty list of integer"),
        ('{"layers": {"0": {"codes": "abc"}}}', "non-empty list of integer"),
        ('{"layers": {"0": {"codes": []}}}', "non-empty list of integer"),
        ('{"layers": {"0": {"codes": [1, {"a": 2}]}}}', "non-empty list of integer"),
        ('{"layers": {"0": 7}}', "non-empty list of integer"),
    ],
)
def test_decode_refuses_hand_edited_codes_with_a_message(folders, tmp_path, capsys, content, message):
    (tmp_path / "codes.json").write_text(content)
    code = cli_main(["decode", "--model", str(folders / "codec"), "--codes", str(tmp_path / "codes.json"),
                     "--output", str(tmp_path / "out.wav")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0] and not (tmp_path / "out.wav").exists()


def test_bad_numbers_on_the_command_line_get_a_message(folders, capsys):
    assert cli_main(["encode", "--model", str(folders / "codec"), "--audio", str(folders / "clip.wav"),
                     "--layers", "abc"]) == 2
    assert "--layers: give comma-separated layer numbers" in capsys.readouterr().err
    for value in ("nan", "-1", "0", "inf", "ten"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["bench", "--seconds", value])
        assert exit_info.value.code == 2
        assert "--seconds: must be a" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["encode", "--audio", "x.wav", "--refine-steps", "many"])
    assert "--refine-steps: must be a whole number" in capsys.readouterr().err


def test_outputs_are_checked_before_the_work_and_never_clobber(folders, tmp_path, capsys, monkeypatch):
    import shutil

    from llm_codec import cli

    clip = tmp_path / "clip.wav"
    shutil.copy(folders / "clip.wav", clip)
    original = clip.read_bytes()
    loads = []
    real_load = cli._load_model
    monkeypatch.setattr(cli, "_load_model", lambda path: loads.append(path) or real_load(path))
    codec = ["--model", str(folders / "codec")]
    existing = tmp_path / "existing.wav"
    existing.write_bytes(b"the user's file")
    (tmp_path / "folder.wav").mkdir()
    cases = [
        (["reconstruct", *codec, "--audio", str(clip), "--output", str(clip)], "is the input"),
        (["reconstruct", *codec, "--audio", str(clip), "--output", str(clip), "--overwrite"], "is the input"),
        (["reconstruct", *codec, "--audio", str(clip), "--output", str(existing)], "exists; pass --overwrite"),
        (["reconstruct", *codec, "--audio", str(clip), "--output", str(tmp_path / "folder.wav")], "is a folder"),
        (["reconstruct", *codec, "--audio", str(clip), "--output", str(tmp_path / "out.txt")], "must end with .wav"),
        (["reconstruct", *codec, "--audio", str(clip), "--output", "/proc/llm_codec_test/x.wav"], "Cannot"),
        (["encode", *codec, "--audio", str(clip), "--output", str(clip)], "is the input"),
        (["encode", *codec, "--audio", str(clip), "--output", str(tmp_path / "codes.wav")], "must end with .json"),
    ]
    for argv, message in cases:
        assert cli_main(argv) == 2, argv
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert message in error, (argv, error)
    assert not loads  # refused before any model was loaded or audio encoded
    assert clip.read_bytes() == original and existing.read_bytes() == b"the user's file"
    assert cli_main(["reconstruct", *codec, "--audio", str(clip), "--output", str(existing), "--overwrite"]) == 0
    assert sf.info(str(existing)).frames == 2400
    assert not list(tmp_path.glob(".*.tmp*"))  # no temporary file left behind


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    import soundfile

    from llm_codec.audio_io import save_audio

    target = tmp_path / "out.wav"
    save_audio(target, np.zeros(1600, np.float32), 16000)
    before = target.read_bytes()

    def dying_write(path, *args, **kwargs):
        Path(path).write_bytes(b"RIFF half a header")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(soundfile, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        save_audio(target, np.ones(160000, np.float32) * 0.1, 16000)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def test_a_truncated_wav_is_refused(folders, tmp_path, capsys):
    full = (folders / "clip.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(full[: len(full) // 3])
    assert cli_main(["reconstruct", "--model", str(folders / "codec"), "--audio", str(tmp_path / "cut.wav"),
                     "--output", str(tmp_path / "out.wav")]) == 2
    assert "is truncated" in capsys.readouterr().err and not (tmp_path / "out.wav").exists()
    from llm_codec.audio_io import load_audio

    audio, rate = load_audio(folders / "clip.wav")  # a whole file still reads
    assert audio.shape == (1, 2400) and rate == 16000


def test_an_invalid_codec_config_is_a_message_not_a_traceback(folders, tmp_path, capsys):
    import shutil

    broken = tmp_path / "codec"
    shutil.copytree(folders / "codec", broken)
    config = json.loads((broken / "config.json").read_text())
    config["codebook_sizes"] = config["codebook_sizes"][:2]
    (broken / "config.json").write_text(json.dumps(config))
    code = cli_main(["reconstruct", "--model", str(broken), "--audio", str(folders / "clip.wav"),
                     "--output", str(tmp_path / "out.wav")])
    error = capsys.readouterr().err
    assert code == 2 and "one codebook size per VQ layer" in error and "Traceback" not in error


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["layers", "audio_length", "codes", "0", "1", "2", "generation_ids", "token_ids", "x"]), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=_json)
def test_fuzz_decode_json_never_crashes(folders, tmp_path, capsys, content):
    """Any JSON as --codes: the command decodes it (exit 0) or says what is wrong (exit 2), never a traceback."""
    import json as json_module

    path = tmp_path / "fuzz.json"
    path.write_text(json_module.dumps(content))
    out = tmp_path / "fuzz.wav"
    out.unlink(missing_ok=True)
    code = cli_main(["decode", "--model", str(folders / "codec"), "--lm", str(folders / "lm"), "--codes", str(path),
                     "--output", str(out), "--separator", "<sep>"])
    captured = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in captured.err
    assert (code == 0) == out.exists()


def test_unexpected_failures_are_one_line_with_exit_1_and_debug_shows_them(folders, tmp_path, capsys, monkeypatch):
    from llm_codec import cli

    def broken(path):
        raise RuntimeError("the device fell over\nsecond line")

    monkeypatch.setattr(cli, "_load_model", broken)
    argv = ["reconstruct", "--model", str(folders / "codec"), "--audio", str(folders / "clip.wav"),
            "--output", str(tmp_path / "out.wav")]
    assert cli_main(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["llm-codec reconstruct: failed: RuntimeError: the device fell over (run with --debug for the traceback)"]
    with pytest.raises(RuntimeError, match="fell over"):
        cli_main(["--debug", *argv])


@pytest.mark.parametrize("command", [["evaluate", "codec", "--data", "x.jsonl"], ["evaluate", "fewshot", "--data", "x"]])
def test_an_unwritable_results_folder_is_refused_before_the_work(tmp_path, capsys, command):
    (tmp_path / "a_file").write_text("")
    for out, message in ((tmp_path / "a_file", "is a file"), ("/proc/llm_codec_test/out", "Cannot create")):
        assert cli_main([*command, "--output", str(out)]) == 2
        assert message in capsys.readouterr().err


def test_json_reports_are_not_written_over_a_file_without_overwrite(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text("the user's notes")
    assert cli_main(["bench", "--output", str(report)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and report.read_text() == "the user's notes"
    assert cli_main(["classify", "--demos", str(tmp_path), "--queries", str(tmp_path), "--output", str(report)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and report.read_text() == "the user's notes"


def _subcommands(parser, path=()):
    """`(path, parser)` of every leaf subcommand of `llm-codec`."""
    import argparse

    children = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not children:
        yield path, parser
    for action in children:
        for name, child in action.choices.items():
            yield from _subcommands(child, (*path, name))


def test_one_vocabulary_model_for_the_codec_and_output_for_what_is_written():
    from llm_codec.cli import build_parser

    commands = dict(_subcommands(build_parser()))
    options = {path: {o for a in p._actions for o in a.option_strings} for path, p in commands.items()}
    for path, names in options.items():
        assert not names & {"--codec", "--out", "--json", "--output-dir", "--output_dir"}, path
    loads_a_codec = {("encode",), ("decode",), ("reconstruct",), ("classify",), ("generate",), ("bench",),
                     ("evaluate", "codec"), ("evaluate", "fewshot")}
    assert all("--model" in options[path] for path in loads_a_codec)
    assert all("--output" in names for path, names in options.items()), [p for p, n in options.items() if "--output" not in n]


def test_a_hub_id_is_passed_through_to_from_pretrained(folders, tmp_path, monkeypatch):
    calls = []
    real = LLMCodecModel.from_pretrained.__func__

    def from_pretrained(cls, name, *args, **kwargs):
        calls.append(str(name))
        return real(cls, folders / "codec", *args, **kwargs)

    monkeypatch.setattr(LLMCodecModel, "from_pretrained", classmethod(from_pretrained))
    assert cli_main(["reconstruct", "--model", "someone/my-codec", "--audio", str(folders / "clip.wav"),
                     "--output", str(tmp_path / "out.wav")]) == 0
    assert calls == ["someone/my-codec"] and (tmp_path / "out.wav").is_file()


def test_an_unreachable_hub_id_is_a_clear_error(folders, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network in tests, and no retries
    argv = ["--audio", str(folders / "clip.wav"), "--output", str(tmp_path / "out.wav")]
    assert cli_main(["reconstruct", "--model", "someone/not-a-codec", *argv]) == 2
    error = capsys.readouterr().err
    assert "--model someone/not-a-codec is neither a local folder nor reachable on the Hugging Face Hub" in error
    assert cli_main(["reconstruct", "--model", str(tmp_path / "no" / "such" / "folder"), *argv]) == 2
    assert "no such folder, and not a Hugging Face Hub id" in capsys.readouterr().err


def test_long_inputs_show_progress_and_quiet_hides_it_with_the_same_outputs(folders, tmp_path, capsys, monkeypatch):
    for name, seconds in (("encode_chunk_s", 0.02), ("encode_context_s", 0.003), ("decode_chunk_s", 0.02)):
        monkeypatch.setattr(LLMCodecModel, name, seconds)  # many chunks for the tiny clip
    chunked = LLMCodecModel.from_pretrained(folders / "codec")
    chunked.save_pretrained(tmp_path / "chunked")
    common = ["--model", str(tmp_path / "chunked"), "--audio", str(folders / "clip.wav")]
    capsys.readouterr()

    assert cli_main(["encode", *common, "--format", "codes", "--output", str(tmp_path / "a.json")]) == 0
    assert "Encoding" in capsys.readouterr().err
    assert cli_main(["encode", *common, "--format", "codes", "--output", str(tmp_path / "b.json"), "--quiet"]) == 0
    assert "Encoding" not in capsys.readouterr().err
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    samples = torch.from_numpy(sf.read(folders / "clip.wav", dtype="float32")[0])[None, None]
    expected = chunked.eval().encode(samples).audio_codes
    assert a == b and [a["layers"][str(k)]["codes"] for k in range(3)] == [c[0].tolist() for c in expected]

    decode = ["decode", "--model", str(tmp_path / "chunked"), "--codes", str(tmp_path / "a.json"), "--seed", "3"]
    assert cli_main([*decode, "--output", str(tmp_path / "a.wav")]) == 0
    assert "Decoding" in capsys.readouterr().err
    assert cli_main([*decode, "--output", str(tmp_path / "b.wav"), "--quiet"]) == 0
    assert "Decoding" not in capsys.readouterr().err
    assert np.array_equal(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0])

    assert cli_main(["reconstruct", *common, "--output", str(tmp_path / "r.wav")]) == 0
    error = capsys.readouterr().err
    assert "Encoding" in error and "Decoding" in error
    # a short input (one chunk at the default chunk lengths) shows nothing
    monkeypatch.undo()
    assert cli_main(["reconstruct", "--model", str(folders / "codec"), "--audio", str(folders / "clip.wav"),
                     "--output", str(tmp_path / "short.wav")]) == 0
    assert "Encoding" not in capsys.readouterr().err
