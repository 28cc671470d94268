"""Exception types raised for bad user input.

Every error names the file, key or value at fault and what was expected, so a
user can fix the input without reading the source.
"""


class HidiffError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class ConfigError(HidiffError, ValueError):
    """An option file or override is malformed (unknown key, wrong type, ...)."""


class RegistryError(HidiffError, KeyError):
    """A registry lookup failed; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(HidiffError, ValueError):
    """A dataset folder, image file or pairing is invalid."""


class CheckpointError(HidiffError, RuntimeError):
    """A checkpoint is missing, truncated, unsafe or does not fit the network."""
