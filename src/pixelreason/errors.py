"""Exceptions with messages meant for users: the CLI prints them as one line and exits 2."""


class PixelReasonError(Exception):
    """Base class for every error pixelreason raises on purpose."""


class InputError(PixelReasonError, ValueError):
    """The user's input (image, query, conversation) cannot be used."""


class CheckpointError(PixelReasonError):
    """A model directory or name cannot be loaded (missing, corrupt or mismatched)."""


class InputTooLargeError(InputError):
    """An input exceeds a size limit (file bytes, pixels); the server answers 413."""
