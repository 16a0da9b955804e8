"""Typed errors. The CLI prints `str(err)` without a traceback and exits with `exit_code`."""


class V4CError(Exception):
    """Base of every error v4c reports to a user."""

    exit_code = 2


class SpecError(V4CError):
    """A model spec (YAML, config.json) is malformed or inconsistent.

    `problems` holds one line per problem, `file:line: path: message`, all found at once.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class IRError(V4CError):
    """A graph is malformed: a type that does not check, a dangling operand, a bad pass."""


class CheckpointError(V4CError):
    """A checkpoint folder cannot be read or written: a missing, unexpected, mis-shaped or
    mis-typed tensor or scale, a corrupt file, a bad index, a config.json that contradicts
    the spec. The message names the file and the tensor, one problem a line."""


class SamplingError(V4CError, ValueError):
    """Sampling settings out of range, or logits / output / buffers of the wrong shape,
    dtype or device. Also a `ValueError`: it is a bad argument to a library call."""


class CommError(V4CError):
    """A collective failed: another rank ended, or did not answer within the timeout."""
