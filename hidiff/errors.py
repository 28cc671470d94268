"""Exception types raised for bad user input, and the training command's exit codes.

Every error names the file, key or value at fault and what was expected, so a
user can fix the input without reading the source.
"""

#: exit codes of ``hidiff-train`` (hidiff/cli/train.py), also read by the commands that run it as a child:
#: done, failed once the run folder was being written (e.g. a checkpoint could not be saved; see the run's
#: log), bad input (refused by the checks: nothing was written), stopped after too many non-finite steps,
#: stopped by a signal (checkpoint saved)
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_SIGNAL = 0, 1, 2, 3, 4


class HidiffError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class ConfigError(HidiffError, ValueError):
    """An option file or override is malformed (unknown key, wrong type, ...)."""


class ConfigProblems(ConfigError):
    """Several problems of one option file, reported together (one line each)."""

    def __init__(self, problems: list) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems:\n  - " + "\n  - ".join(self.problems)
        super().__init__(text)


class RegistryError(HidiffError, KeyError):
    """A registry lookup failed; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(HidiffError, ValueError):
    """A dataset folder, image file or pairing is invalid."""


class CheckpointError(HidiffError, RuntimeError):
    """A checkpoint is missing, truncated, unsafe or does not fit the network."""
