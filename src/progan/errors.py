"""Exceptions that carry a message meant for the user.

The command line prints ``Error: <message>`` for any :class:`ProganError` and exits with
status 2; everything else is a bug and shows a traceback.
"""

from __future__ import annotations


class ProganError(Exception):
    """Base class: a problem with the user's input, files or settings (not a bug)."""


class DatasetError(ProganError):
    """A dataset source or a prepared dataset is missing, unreadable or inconsistent."""


class CheckpointError(ProganError):
    """A checkpoint is missing, truncated, corrupt, unsafe or from another configuration."""


class ConfigError(ProganError):
    """An option or configuration value is invalid."""


class TrainingDiverged(ProganError):
    """Losses became NaN/Inf and retrying from the last good checkpoint did not help."""
