"""Errors that kmtl raises for bad user input.

Every error names the place (a YAML key path or ``file:line``) and says how to fix it, so
that the CLI can print it without a traceback and exit with status 2.
"""


class KmtlError(Exception):
    """Base class of kmtl's user-facing errors (bad config, bad data, bad paths)."""


class ConfigError(KmtlError):
    """One or more problems in a configuration, each with its YAML key path.

    Args:
        problems: list of ``(key_path, message)`` pairs, e.g.
            ``[("tasks[1].source.path", "no such file: data/x.tsv")]``.

    Example:
        >>> raise ConfigError([("tasks[0].kind", "unknown kind 'clf'; choose one of ...")])
    """

    def __init__(self, problems):
        self.problems = list(problems)
        lines = [f"{path}: {msg}" if path else msg for path, msg in self.problems]
        noun = "problem" if len(lines) == 1 else "problems"
        super().__init__(f"{len(lines)} configuration {noun}:\n  " + "\n  ".join(lines))


class DataError(KmtlError):
    """A problem in a data file, located by ``file:line``.

    Args:
        where: the place, e.g. ``"data/train.tsv:17"`` (or just a path for whole-file problems).
        message: what is wrong and how to fix it.
    """

    def __init__(self, where, message):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class ExportError(KmtlError):
    """A problem with an export destination (e.g. the version folder already exists)."""
