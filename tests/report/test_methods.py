"""``uaafusion compare-methods`` on a small real project: two method presets (uaafusion and alpha_blend)
trained briefly on the embedded data, evaluated by the pipeline's evaluate step, then compared (table,
paired bootstrap intervals, the pixel baselines, the degraded sets, the panel)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_params_dict
from tests.report.fake_project import read_tables, texts
from uaafusion.cli import main as cli_main
from uaafusion.config import load_params
from uaafusion.paths import ProjectPaths

METHODS = ("uaafusion", "alpha_blend")


def write_preset(root: Path, name: str, data_root: Path | None = None, **extra: object) -> Path:
    """A method preset under ``root/params/methods`` (the tiny params, the head, its own folders; the data
    at ``data_root``, default ``root/data/synthetic``, given absolute: training reads it from any folder)."""
    data_root = data_root if data_root is not None else root / "data" / "synthetic"
    raw = tiny_params_dict(**{"data.root": str(data_root), "model.fusion.name": name,
                              "outputs.models": f"models/methods/{name}", "outputs.fused": f"data/fused-methods/{name}",
                              "outputs.reports": f"reports/methods/{name}", **extra})
    path = root / "params" / "methods" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two presets pretrained for one epoch, exported and evaluated (evaluation.json of each)."""
    from uaafusion.data.synthetic import write_synthetic_dataset
    from uaafusion.steps import evaluate_step
    from uaafusion.training import export_models, run_stage

    root = tmp_path_factory.mktemp("methods-project")
    (root / "dvc.yaml").write_text("stages: {}\n")
    for name in METHODS:
        preset = write_preset(root, name)
        params = load_params(preset)
        if name == METHODS[0]:
            write_synthetic_dataset(params.synthetic, Path(params.data.root))
        paths = ProjectPaths.at(root, params.outputs)
        run_stage(params, root / "runs" / name, "pretrain", 0)
        export_models(params, root / "runs" / name, paths.model_checkpoint)
        evaluate_step(params, paths)
    return root


def presets(root: Path) -> list[str]:
    return [str(root / "params" / "methods" / f"{name}.yaml") for name in METHODS]


def test_the_comparison_tables_every_method_with_intervals_facts_and_a_panel(project: Path) -> None:
    from uaafusion.models.checkpoint import load_models

    benchmarks = project / "reports" / "benchmarks.json"
    benchmarks.write_text(json.dumps({"cases": {
        "methods/alpha_blend/fuse-640x480": {"median_s": 1.25}, "methods/alpha_blend/fusion-step": {"median_s": 0.5},
        "inference/exact/640x480": {"median_s": 9.0}}}))
    assert cli_main(["compare-methods", *presets(project)]) == 0
    out = project / "reports" / "methods"
    table = read_tables((out / "index.html").read_text())[0]
    header = texts(table[0])
    rows = {row[0][0]: texts(row) for row in table[1:]}
    assert list(rows) == ["uaafusion", "alpha_blend", "average", "maximum"]
    own = json.loads((project / "reports" / "methods" / "alpha_blend" / "evaluation.json").read_text())["ours"]["mean"]
    assert rows["alpha_blend"][header.index("VIF")].split()[0] == f"{own['VIF']:.4f}"
    checkpoint = project / "models" / "methods" / "alpha_blend" / "uaafusion.pt"
    count = sum(parameter.numel() for parameter in load_models(checkpoint).fusion.parameters())
    assert rows["alpha_blend"][header.index("parameters")] == f"{count:,}"
    assert rows["alpha_blend"][header.index("inference (s, 640×480)")] == "1.250"
    assert rows["uaafusion"][header.index("inference (s, 640×480)")] == "–"  # not benchmarked: no number
    assert rows["average"][header.index("parameters")] == "–"
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["reference"] == "uaafusion" and {"alpha_blend", "average", "maximum"} <= set(comparison["against"])
    readme = (out / "README.md").read_text()
    assert "Differences: uaafusion minus each other method" in readme
    assert "alpha_blend − average: VIF" in readme and "uaafusion − average: VIF" in readme
    assert "beat the pixel average on VIF and Qabf" in readme
    assert (out / "figures" / "methods_panel.png").stat().st_size > 10_000
    assert f"uaafusion compare-methods {' '.join(presets(project))}" in readme


def test_the_degraded_sets_are_fused_by_every_model_and_compared_with_the_reference(project: Path) -> None:
    from uaafusion.degraded_benchmark import prepare_degraded_sets

    degraded = project / "params" / "degraded.yaml"
    degraded.write_text(yaml.safe_dump({"extends": "methods/uaafusion.yaml", "evaluate": {"degraded": {
        "kinds": ["noise"], "root": "data/degraded", "baselines": False}}}))
    params = load_params(degraded)
    prepare_degraded_sets(params, ProjectPaths.at(project, params.outputs))
    out = project / "reports" / "methods-degraded"
    assert cli_main(["compare-methods", *presets(project), "--degraded", str(degraded), "--out", str(out),
                     "--samples", "0"]) == 0
    document = json.loads((out / "degraded.json").read_text())
    entry = document["sets"]["noise"]
    assert set(entry["mean"]) == {"uaafusion", "alpha_blend"} and entry["comparison"]["reference"] == "uaafusion"
    assert "alpha_blend" in entry["comparison"]["against"]
    readme = (out / "README.md").read_text()
    assert "Degraded test sets (severity 0.5, seed 0): uaafusion minus alpha_blend" in readme
    assert not (out / "figures").exists()


def test_presets_that_differ_in_budget_or_lack_an_evaluation_are_refused(project: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    longer = write_preset(project / "other", "prompt", project / "data" / "synthetic", **{"train.pretrain_epochs": 2})
    (project / "other" / "dvc.yaml").write_text("stages: {}\n")
    assert cli_main(["compare-methods", presets(project)[0], str(longer)]) == 2
    assert f"{longer}: no evaluation" in capsys.readouterr().err
    (project / "other" / "reports" / "methods" / "prompt").mkdir(parents=True)
    (project / "other" / "reports" / "methods" / "prompt" / "evaluation.json").write_text("{}")
    assert cli_main(["compare-methods", presets(project)[0], str(longer)]) == 2
    error = capsys.readouterr().err
    assert "differ in train.pretrain_epochs" in error and str(longer) in error
    assert cli_main(["compare-methods", presets(project)[0], presets(project)[0]]) == 2
    assert "give each method one preset" in capsys.readouterr().err


def test_training_time_is_read_from_the_mlflow_runs_that_train(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from uaafusion.report.methods import training_minutes

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("methods")
    start = int(time.time() * 1000)
    parent = client.create_run(experiment, start_time=start, run_name="alpha_blend").info.run_id
    for name, begin, end in (("pretrain", 60, 180), ("round-1/fusion", 200, 400), ("round-1/validation", 400, 900),
                             ("evaluate", 900, 5000)):
        child = client.create_run(experiment, start_time=start + begin * 1000, run_name=name,
                                  tags={"mlflow.parentRunId": parent}).info.run_id
        client.set_terminated(child, end_time=start + end * 1000)
    paths = ProjectPaths.at(tmp_path)
    paths.mlflow_pointer.parent.mkdir(parents=True)
    paths.mlflow_pointer.write_text(json.dumps({"parent_run_id": parent, "tracking_uri": uri,
                                                "experiment_id": experiment}))
    assert training_minutes(paths) == pytest.approx((400 - 60) / 60)  # validation, evaluate: not training
    paths.mlflow_pointer.write_text("{}")
    assert training_minutes(paths) is None
