"""The ``uaafusion`` command line: one sub-command per module in ``uaafusion.commands``, plus the
commands other installed packages register under the entry-point group ``uaafusion.commands``
(the project's Prefect flow adds ``uaafusion train`` that way: this package never imports it).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import logging
import sys

from uaafusion.allocator import keep_freed_memory
from uaafusion.errors import UAAFusionError

# Each module exposes ``register(subparsers)``; its parser sets ``func`` (args -> exit code).
COMMAND_MODULES: tuple[str, ...] = ("prepare", "degrade", "evaluate", "compare", "fuse", "report", "sync-tracking",
                                    "methods", "compare-methods")
COMMAND_ENTRY_POINTS = "uaafusion.commands"
"""Entry-point group of commands from other packages: each names a ``register(subparsers)`` function."""


@functools.cache
def plugin_commands() -> dict[str, importlib.metadata.EntryPoint]:
    """The commands other packages register under :data:`COMMAND_ENTRY_POINTS`, by name (read once)."""
    return {entry_point.name: entry_point for entry_point in importlib.metadata.entry_points(group=COMMAND_ENTRY_POINTS)}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or (``command`` given) with that one alone: a run imports only
    the module of the command it runs."""
    parser = argparse.ArgumentParser(
        prog="uaafusion",
        description="Segmentation-driven infrared-visible image fusion (UAAFusion).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if command in (None, name):
            importlib.import_module(f"uaafusion.commands.{name.replace('-', '_')}").register(subparsers)
    for name, entry_point in plugin_commands().items():
        if command in (None, name):
            entry_point.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = next((item for item in arguments if not item.startswith("-")), None)
    known = {*COMMAND_MODULES, *plugin_commands()}
    parser = build_parser(command if command in known else None)
    args = parser.parse_args(arguments)
    keep_freed_memory()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except UAAFusionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
