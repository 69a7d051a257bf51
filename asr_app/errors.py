"""User-facing errors. The CLI prints `str(error)` on one line and exits non-zero.

Every message says what went wrong and what to do about it.
"""


class AsrAppError(Exception):
    """Base of every error a user can cause or fix (bad input, missing model, ...)."""


class AudioError(AsrAppError):
    """An audio file is missing, empty, truncated, silent-by-construction or not audio."""


class ModelError(AsrAppError):
    """A model cannot be found, read or converted (missing package, corrupt model.bin)."""


class DatasetError(AsrAppError):
    """A dataset folder or manifest is not in a layout `eval` understands."""


class OptionError(AsrAppError):
    """An option value that cannot work with the chosen model or input."""


def install_hint(extra: str) -> str:
    """How to install one of the package's optional extras, as the README says it.

    asr-app is installed from its source folder (`pip install -e .`); pip lists it as
    `ownvoice-asr`, since the name `asr-app` on PyPI belongs to another project.
    """
    return f'pip install -e ".[{extra}]" (in the asr-app source folder)'
