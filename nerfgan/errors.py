"""The errors nerfgan raises for a user's mistake.

Every subclass of :class:`NerfganError` carries a message that names the file, option or
tensor at fault; the CLI prints it on one line without a traceback. Anything else that escapes
is a bug and keeps its traceback.
"""

from __future__ import annotations


class NerfganError(Exception):
    """Base class of every error caused by user input (a file, an option, a tensor)."""

    exit_code = 1


class UsageError(NerfganError):
    """An option or argument has a malformed or unknown value (CLI exit code 2)."""

    exit_code = 2


class InputFileError(NerfganError):
    """A file given by the user is missing, unreadable, or not of the expected kind."""


class OutputError(NerfganError):
    """An output cannot be written (read-only or missing folder, disk full, a folder nerfgan may not replace)."""


class CheckpointError(InputFileError):
    """A checkpoint (upstream pickle or nerfgan safetensors) has the wrong content or structure."""


class ConfigError(NerfganError):
    """A configuration value is invalid or inconsistent with the weights it describes."""


class PoseError(UsageError):
    """A camera pose is malformed or out of range."""


class MissingDependencyError(NerfganError):
    """An optional dependency is not installed; the message names the extra to install."""


class ExportMismatchError(NerfganError):
    """An exported artifact failed its validation gate; the message lists every output that missed."""


class TensorError(UsageError):
    """A tensor given to a model or the runtime has the wrong shape, dtype or batch, or non-finite values."""


class EngineError(NerfganError):
    """An engine (ONNX Runtime, OpenVINO, TensorRT, PyTorch, an AOTInductor package) failed while running a model:
    out of memory, an operator's run-time check. nerfgan.runtime.backends.Backend.infer maps every backend's
    run-time failure to this one type; the message names the file and the engine's own first line."""
