"""uaafusion: segmentation-driven infrared-visible image fusion (UAAFusion)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def fuse(*args: Any, **kwargs: Any) -> Any:
    """Fuse an infrared/visible pair; see :func:`uaafusion.inference.fuse`."""
    from uaafusion.inference import fuse as _fuse

    return _fuse(*args, **kwargs)


def __getattr__(name: str) -> Any:
    """``uaafusion.Fuser`` (:class:`uaafusion.fuser.Fuser`), imported on first use (torch is heavy)."""
    if name == "Fuser":
        from uaafusion.fuser import Fuser

        return Fuser
    raise AttributeError(f"module 'uaafusion' has no attribute {name!r}")


__all__ = ["Fuser", "__version__", "fuse"]
