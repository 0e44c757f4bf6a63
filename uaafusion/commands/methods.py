"""``uaafusion methods``: the registered fusion models, their parameter counts at the params' sizes, one line each."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "methods",
        help="list the fusion models (model.fusion.name) with their parameter counts",
        description="List every registered fusion model: its name (the value of model.fusion.name), its number "
                    "of trainable parameters when built with the params' model.fusion sizes, and what it is.",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params whose model.fusion sizes are used (default: params.yaml; package defaults "
                             "when it does not exist)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, e.g. -S model.fusion.features=32")
    parser.set_defaults(func=run)


def describe_methods(params: object) -> list[tuple[str, int | None, str]]:
    """``[(name, trainable parameters, first line of its docstring)]`` of every registered fusion model,
    built with the fusion spec of ``params`` (a :class:`~uaafusion.config.Params`); a model that cannot be
    built from that spec (a plugin with other arguments) has ``None`` and the reason."""
    from uaafusion.errors import ConfigError
    from uaafusion.models import available_fusion_models, count_parameters, create_fusion_model
    from uaafusion.training.builders import model_spec

    arguments = {key: value for key, value in model_spec(params)["fusion"].items() if key != "name"}
    rows: list[tuple[str, int | None, str]] = []
    for name in available_fusion_models():
        try:
            model = create_fusion_model(name, **arguments)
        except ConfigError as error:
            rows.append((name, None, f"cannot be built from model.fusion: {error}"))
            continue
        doc = (type(model).__doc__ or "").strip()
        rows.append((name, count_parameters(model), doc.splitlines()[0] if doc else ""))
    return rows


def run(args: argparse.Namespace) -> int:
    from uaafusion.config import load_params, params_from_dict, parse_overrides

    overrides = parse_overrides(args.set)
    params = load_params(args.params, overrides) if args.params.is_file() else params_from_dict({}, overrides)
    rows = describe_methods(params)
    width = max(len(name) for name, _, _ in rows)
    for name, parameters, summary in rows:
        size = f"{parameters:>9,} parameters" if parameters is not None else f"{'?':>9} parameters"
        print(f"{name:<{width}}  {size}  {summary}")
    return 0
