"""Errors a user can fix. The CLI turns each into a one-line message and
exit code 1; anything else is a bug and keeps its traceback."""


class GnnCompressError(Exception):
    """Base class of every error the user can fix."""


class CheckpointError(GnnCompressError):
    """A checkpoint file is missing, unreadable, unsafe or not a model."""


class ArchitectureError(GnnCompressError):
    """The architecture cannot be inferred, or does not fit the data."""


class DataError(GnnCompressError):
    """A dataset cannot be found, loaded or split."""


class UnknownMethodError(GnnCompressError):
    """A distillation method name is not registered."""


class ExportError(GnnCompressError):
    """An export failed or does not match PyTorch."""


class OutputError(GnnCompressError):
    """The output folder cannot be written."""


class TrainingError(GnnCompressError):
    """Training diverged (NaN or infinite loss). ``best_epoch`` and
    ``val_accuracy`` describe the best student before it (epoch 0: none)."""
    best_epoch: int = 0
    val_accuracy: float = float('nan')
