"""Where an experiment's result goes: one JSON document with the command that reproduces it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch


def write_record(out: str | Path, script: str, params: str, **fields: Any) -> Path:
    """Write ``{"params", "command", "torch", **fields}`` to ``out`` (folders made as needed).

    ``command`` is ``python experiments/<script>`` with this process's arguments.
    """
    document = {"params": params, "command": " ".join(["python", f"experiments/{script}", *sys.argv[1:]]),
                "torch": torch.__version__, **fields}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")
    return out
