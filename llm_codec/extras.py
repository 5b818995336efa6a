"""Optional dependencies (the extras of setup.py): the error that says which extra to install when one is missing.

Their imports stay inside the functions that need them, so that `import llm_codec` works without them, in a `try`
whose `except ImportError as error:` does `raise missing_extra(error, "matplotlib", "plots", "Plotting") from None`.
"""


def missing_extra(error: ImportError, package: str, extra: str, purpose: str) -> ImportError:
    """
    The error to raise for the failed import `error` of the optional `package`.

    Args:
        error (`ImportError`): what the import raised.
        package (`str`): the top-level module, also its pip name (e.g. "matplotlib").
        extra (`str`): the setup.py extra that installs it (e.g. "plots").
        purpose (`str`): what needs it, the start of the message (e.g. "Plotting").

    Returns:
        `ModuleNotFoundError` naming the `pip install` command when `package` itself is not installed; otherwise
        (`package` is installed but one of its own imports failed) `error` itself.
    """
    if not isinstance(error, ModuleNotFoundError) or (error.name or "").split(".")[0] != package:
        return error
    return ModuleNotFoundError(
        f"{purpose} needs {package}, an optional dependency that is not installed: "
        f'pip install "llm-codec[{extra}]" (or pip install {package}).',
        name=package,
    )


__all__ = ["missing_extra"]
