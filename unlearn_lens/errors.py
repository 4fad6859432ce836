"""Errors that reach a user as one line: what was wrong, where, and what to do."""


class UnlearnLensError(Exception):
    """Base of every error the CLI prints as a single line and exits non-zero on."""


class ModelSourceError(UnlearnLensError):
    """A model source could not be loaded or wrapped."""


class ConfigError(UnlearnLensError):
    """A setting (flag, config field, argument) is invalid."""


class RunLockedError(UnlearnLensError):
    """Another process holds the run lock of an output directory (see `run_lock`)."""


def one_line(error: BaseException) -> str:
    """The error as one line: an `OSError` as `file: reason`, anything else as its first line."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
