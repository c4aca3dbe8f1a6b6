"""Errors that name the file or setting at fault and say how to fix it."""


class MedzooError(Exception):
    """Base class for every error medzoo raises on purpose."""


class ConfigError(MedzooError, ValueError):
    """A setting is missing or wrong; the message names the key to change."""


class DataError(MedzooError):
    """A data file or folder is missing, unreadable or inconsistent."""


class UnknownNameError(MedzooError, KeyError):
    """A registry lookup failed; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
