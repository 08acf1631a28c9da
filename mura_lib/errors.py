"""The project's exceptions.

Every error a user can cause (wrong folder, malformed CSV, corrupt image, missing weights, bad
checkpoint, bad parameters) is a :class:`MuraError`. Its message names the file involved and
says what to do; the command line prints the message alone, without a traceback.
"""


class MuraError(Exception):
    """Base class of every error a user can cause and fix."""


class MuraFormatError(MuraError):
    """The data set on disk is not a valid MURA-v1.1 tree (layout, CSV or labels)."""


class ImageReadError(MuraError):
    """An image file cannot be decoded (empty, not an image, too large)."""


class WeightsUnavailableError(MuraError):
    """Pretrained weights were requested but are neither cached nor downloadable."""


class CheckpointError(MuraError):
    """A checkpoint file is missing, unreadable or incompatible."""


class ConfigError(MuraError):
    """A combination of parameters that cannot work (e.g. a schedule that never fires)."""


class DiskFullError(MuraError):
    """A file could not be written: no space (or quota) left on its device."""


class BusyError(MuraError):
    """Another process holds the lock of a training folder or of a reproduce profile."""
