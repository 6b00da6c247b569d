"""Expected errors: each carries the one line shown to the user and the exit code.

The command line prints `str(error)` without a traceback; anything else is a bug.
"""


class BenchmarkError(Exception):
    """An expected failure caused by input the user can fix (exit code 2)."""

    exit_code = 2


class ConfigError(BenchmarkError):
    """A config file, `--set` override or command-line value that cannot be used."""


class DataError(BenchmarkError):
    """Omniglot data that is missing, corrupt, or cannot be fetched."""


class EpisodeError(BenchmarkError):
    """An episode request that the data cannot satisfy, or a tampered frozen file."""


class MethodError(BenchmarkError):
    """A method that failed while fitting or predicting (exit code 1)."""

    exit_code = 1


class RunFolderError(ConfigError):
    """A run folder that is locked by another run, or whose records cannot be trusted."""
