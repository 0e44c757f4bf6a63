"""A full build draws the figures then renders; render-only rewrites the pages from the report folder alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.report.fake_project import column_best, project_params, read_tables, write_evaluation, write_tiny_dataset
from uaafusion.cli import main as cli_main
from uaafusion.config import load_params, params_from_dict
from uaafusion.errors import DataError
from uaafusion.paths import ProjectPaths
from uaafusion.report import FUSION_METRICS, build_report, render_report


def pages(paths: ProjectPaths) -> tuple[str, str]:
    return (paths.reports / "index.html").read_text(), (paths.reports / "README.md").read_text()


def test_build_draws_every_figure_and_removes_stale_ones(built_report: ProjectPaths) -> None:
    figures = built_report.reports / "figures"
    names = sorted(path.name for path in figures.glob("*.png"))
    assert names == ["sample_s1.png", "sample_s2.png", "training_loss.png", "validation_rounds.png"]
    for path in figures.glob("*.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width <= 1400 and image.height <= 1000
    assert np.asarray(Image.open(figures / "sample_s1.png").convert("RGB")).std() > 10  # not blank
    assert json.loads((built_report.reports / "build.json").read_text())["notes"] == []  # every input was there


def test_the_evaluation_is_required_and_other_missing_inputs_are_notes(project: ProjectPaths) -> None:
    params = load_params(project.params)
    evaluation = project.evaluation.read_text()
    project.evaluation.unlink()
    for make in (build_report, render_report):
        with pytest.raises(DataError, match="evaluation.json.*evaluate step"):
            make(params, project)
    assert not (project.reports / "figures").exists()  # nothing drawn before the check
    project.evaluation.write_text(evaluation)
    html_text = build_report(params, project).read_text()  # no CSVs, no model, no fused images
    for note in ("No training losses found in reports/training/steps.csv", "No validation rounds found",
                 "No model checkpoint at models/uaafusion.pt", "No fused image in data/fused/ours for s1"):
        assert f"Note: {note}" in html_text
    assert "No training curves available." in html_text
    assert [path.name for path in (project.reports / "figures").glob("*.png")] == ["sample_s1.png"]
    built = pages(project)
    render_report(params, project)
    assert pages(project) == built  # the build's notes are kept for later renders


def test_render_only_rewrites_the_pages_as_the_full_build_without_model_or_data(
        built_report: ProjectPaths, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = ProjectPaths.at(tmp_path / "copy")  # the report folder and the params, not the model or the data
    shutil.copytree(built_report.reports, copy.reports)
    shutil.copy(built_report.params, copy.params)
    (copy.root / "dvc.yaml").write_text("stages: {}\n")
    built = pages(built_report)
    figures = {path.name: path.read_bytes() for path in (copy.reports / "figures").glob("*.png")}
    assert cli_main(["report", "--params", str(copy.params), "--render-only"]) == 0
    assert "report rendered to" in capsys.readouterr().out
    assert pages(copy) == built  # byte for byte, the build's notes included
    assert {path.name: path.read_bytes() for path in (copy.reports / "figures").glob("*.png")} == figures
    # A discussion written later, and a re-scored evaluation, without rebuilding the figures.
    (copy.root / "notes.md").write_text("### Later\n\nWritten after the run.\n")
    raw = yaml.safe_load(copy.params.read_text())
    copy.params.write_text(yaml.safe_dump({**raw, "report": {"samples": 2, "discussion": "notes.md"}}))
    evaluation = json.loads(copy.evaluation.read_text())
    evaluation["ours"]["count"] = 4
    copy.evaluation.write_text(json.dumps(evaluation))
    assert cli_main(["report", "--params", str(copy.params), "--render-only"]) == 0
    html_text, markdown = pages(copy)
    assert "<h2>Discussion</h2>\n<div class=\"discussion\">\n<h3>Later</h3>" in html_text
    assert "(4 test images)" in markdown and "(3 test images)" in built[1]
    assert html_text.count("<img ") == built[0].count("<img ") == 4


def test_preset_report_goes_to_its_outputs_with_generalisation_tables_and_its_command(tmp_path: Path) -> None:
    outputs = {"models": "models/preset", "fused": "data/fused-preset", "reports": "reports/preset"}
    raw = project_params(outputs=outputs, report={"samples": 0})
    raw["evaluate"]["generalisation"] = {"roadlike": "data/roadlike"}
    preset = tmp_path / "params" / "preset.yaml"
    preset.parent.mkdir()
    preset.write_text(yaml.safe_dump(raw))
    paths = ProjectPaths.at(tmp_path, params_from_dict(raw).outputs)
    assert paths.reports == tmp_path / "reports" / "preset"
    write_tiny_dataset(tmp_path / "data" / "tiny")
    write_evaluation(paths)
    paths.generalisation.write_text(json.dumps({"roadlike": {"root": "data/roadlike", "methods": {
        method: {"mean": {metric: 1.0 + offset for metric in FUSION_METRICS}, "count": 5}
        for method, offset in (("maximum", 0.2), ("average", 0.0), ("ours", 0.5))}}}))

    # The run used an override: the report's parameters and its command say so.
    assert cli_main(["report", "--params", str(preset), "--root", str(tmp_path), "-S", "loss.class_balance=0.25"]) == 0
    assert not (tmp_path / "reports" / "index.html").exists()
    html_text, markdown = pages(paths)
    general = read_tables(html_text)[-1]
    assert [row[0][0] for row in general[1:]] == ["ours", "average", "maximum"]
    assert column_best(general, "VIF") == {"ours"}
    assert "Generalisation: roadlike" in html_text and "## Generalisation: roadlike" in markdown
    assert ("uaafusion train --params params/preset.yaml --steps prepare,train,evaluate,report"
            " -S loss.class_balance=0.25") in markdown
    assert "class_balance: 0.25" in markdown and "dvc repro\n" not in markdown
    # A malformed override is refused (exit 2, message on stderr) before anything is built.
    assert cli_main(["report", "--params", str(preset), "--root", str(tmp_path), "-S", "loss.class_balance"]) == 2
