"""uaafusion: segmentation-driven infrared-visible image fusion (UAAFusion)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def fuse(*args: Any, **kwargs: Any) -> Any:
    """Fuse an infrared/visible pair; see :func:`uaafusion.inference.fuse`."""
    from uaafusion.inference import fuse as _fuse

    return _fuse(*args, **kwargs)
