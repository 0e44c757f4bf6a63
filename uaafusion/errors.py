"""Exceptions with messages written for people: what was wrong, where, and what to do."""

from __future__ import annotations


class UAAFusionError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(UAAFusionError):
    """A parameter in ``params.yaml`` (or an override) has a wrong key, type or value."""


class DataError(UAAFusionError):
    """An input file or folder cannot be used (missing partner, size mismatch, unreadable, ...)."""


class TrainingError(UAAFusionError):
    """Training cannot go on (NaN/inf loss, incompatible checkpoint, ...)."""


class DeviceError(UAAFusionError):
    """The requested device is not available on this machine."""
