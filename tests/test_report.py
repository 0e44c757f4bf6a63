"""The report: metrics table with the best marked, curves, sample grids, self-contained HTML, Markdown twin."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from uaafusion.cli import main as cli_main
from uaafusion.config import params_from_dict
from uaafusion.data.io import write_png
from uaafusion.errors import DataError
from uaafusion.paths import ProjectPaths
from uaafusion.report import (
    FUSION_METRICS,
    best_methods,
    build_report,
    format_number,
    method_order,
    refresh_report,
)

CLASS_NAMES = ["background", "road", "person"]
SAMPLE_NAMES = ["s1", "s2", "s3"]
HEIGHT, WIDTH = 40, 52
METHODS = ["ours", "average", "maximum", "peerX"]


def project_params(**extra: object) -> dict:
    params = {
        "device": "cpu",
        "data": {"layout": "msrs", "root": "data/tiny", "num_classes": 3, "class_names": CLASS_NAMES},
        "model": {"fusion": {"stages": 1, "features": 8}},
        "evaluate": {"peers": {"peerX": "data/peer"}},
        "report": {"samples": 2},
    }
    params.update(extra)
    return params


def write_tiny_dataset(root: Path) -> None:
    """msrs layout: ``test/{ir,vi,Label}/NAME.png``, one visible image in colour."""
    generator = np.random.default_rng(0)
    for index, name in enumerate(SAMPLE_NAMES):
        rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
        ir = ((np.sin(columns / 5.0 + index) + 1) * 100 + generator.integers(0, 40, (HEIGHT, WIDTH))).astype(np.uint8)
        vi_gray = ((rows * 255) // HEIGHT).astype(np.uint8)
        vi = np.stack([vi_gray, 255 - vi_gray, ir], axis=-1) if index == 0 else vi_gray
        label = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        label[HEIGHT // 2:, :] = 1
        label[5:15, 10 + index * 5:20 + index * 5] = 2
        label[0, :] = 255  # unknown pixels
        write_png(root / "test" / "ir" / f"{name}.png", ir)
        write_png(root / "test" / "vi" / f"{name}.png", vi)
        write_png(root / "test" / "Label" / f"{name}.png", label)


def write_models(path: Path) -> None:
    from uaafusion.models import create_fusion_model, create_segmenter
    from uaafusion.models.checkpoint import save_models

    torch.manual_seed(0)
    segmenter = create_segmenter("Unet", "mobilenet_v2", num_classes=3, encoder_depth=3, decoder_channels=(16, 8, 4))
    fusion = create_fusion_model("uaafusion", stages=1, features=8, attribution_steps=2)
    save_models(path, fusion, segmenter)


def fake_means(offset: float) -> dict:
    means = {metric: 1.0 + offset + 0.01 * position for position, metric in enumerate(FUSION_METRICS)}
    means.update({"mIoU": 0.4 + offset, "mIoU_ir": 0.3, "mIoU_vi": 0.35, "pixel_accuracy": 0.8 + offset,
                  "IoU/background": 0.9, "IoU/road": 0.5 + offset, "IoU/person": 0.1 + offset})
    return means


def fake_confusion(correct: int) -> list[list[int]]:
    """A 3-class confusion matrix with ``correct`` pixels on the diagonal per class and 10 off it."""
    return [[correct if target == prediction else 5 for prediction in range(3)] for target in range(3)]


def write_evaluation(paths: ProjectPaths) -> dict:
    """ours best on most metrics; peerX best on SD; maximum ties ours on SSIM; average lacks VIF.

    Per image, EN is the method's offset plus the image's; ours and average carry confusion
    matrices (their segmenter finds more on the fused images than on the infrared ones).
    """
    evaluation = {}
    for method, offset in zip(METHODS, (0.3, 0.0, 0.1, 0.2)):
        means = fake_means(offset)
        per_image = {name: {"EN": 1.0 + offset + 0.1 * index} for index, name in enumerate(SAMPLE_NAMES)}
        evaluation[method] = {"per_image": per_image, "mean": means, "count": 3}
        if method in ("ours", "average"):
            fused = 100 if method == "ours" else 60
            evaluation[method]["confusion"] = {
                key: {name: fake_confusion(correct) for name in SAMPLE_NAMES}
                for key, correct in (("mIoU", fused), ("mIoU_ir", 40), ("mIoU_vi", fused))}
    evaluation["peerX"]["mean"]["SD"] = 99.0
    evaluation["maximum"]["mean"]["SSIM"] = evaluation["ours"]["mean"]["SSIM"]
    evaluation["average"]["mean"]["VIF"] = None
    paths.reports.mkdir(parents=True, exist_ok=True)
    paths.evaluation.write_text(json.dumps(evaluation))
    return evaluation


def write_training_csvs(paths: ProjectPaths) -> None:
    paths.training_plots.mkdir(parents=True, exist_ok=True)
    with open(paths.training_plots / "steps.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "stage", "loss", "loss_intensity", "loss_segmentation"])
        for step in range(30):
            stage = "pretrain" if step < 10 else ("fusion" if step < 20 else "segmentation")
            writer.writerow([step, stage, 2.0 / (step + 1) + 0.1, 1.0 / (step + 1), "" if stage == "fusion" else 0.5])
    with open(paths.training_plots / "rounds.csv", "w", newline="") as handle:
        columns = ["step", "round", *FUSION_METRICS, "mIoU", "mIoU_ir", "mIoU_vi"]
        writer = csv.writer(handle)
        writer.writerow(columns)
        for round_index in (1, 2):
            writer.writerow([round_index * 10, round_index, *[round_index + 0.1 * k for k in range(len(columns) - 2)]])


def write_fused_images(paths: ProjectPaths) -> None:
    for method in ("ours", "average", "maximum"):
        for name in SAMPLE_NAMES[:2]:
            write_png(paths.fused / method / f"{name}.png", np.full((HEIGHT, WIDTH), 128, dtype=np.uint8))


@pytest.fixture(scope="module")
def built_report(tmp_path_factory: pytest.TempPathFactory) -> ProjectPaths:
    """A whole fake project whose report is built through ``uaafusion report``."""
    root = tmp_path_factory.mktemp("project")
    paths = ProjectPaths.at(root)
    paths.params.write_text(yaml.safe_dump(project_params()))
    write_tiny_dataset(root / "data" / "tiny")
    write_models(paths.model_checkpoint)
    write_evaluation(paths)
    write_training_csvs(paths)
    write_fused_images(paths)
    (paths.reports / "figures").mkdir(parents=True, exist_ok=True)
    (paths.reports / "figures" / "sample_stale.png").write_bytes(b"old")
    assert cli_main(["report", "--params", str(paths.params)]) == 0
    return paths


class TableReader(HTMLParser):
    """Rows of every ``<table>`` as lists of ``(text, is_best)``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, bool]]]] = []
        self._cell: list[str] | None = None
        self._best = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
            self._best = "best" in (dict(attrs).get("class") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell).strip(), self._best))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def read_tables(html_text: str) -> list[list[list[tuple[str, bool]]]]:
    reader = TableReader()
    reader.feed(html_text)
    return reader.tables


def column_best(table: list[list[tuple[str, bool]]], column: str) -> set[str]:
    header = [text for text, _ in table[0]]
    position = header.index(column)
    return {row[0][0] for row in table[1:] if row[position][1]}


def test_html_metrics_table_lists_every_method_and_marks_the_best(built_report: ProjectPaths) -> None:
    html_text = (built_report.reports / "index.html").read_text()
    headline, per_class, by_input, *_ = read_tables(html_text)
    assert [row[0][0] for row in headline[1:]] == METHODS
    header = [text for text, _ in headline[0]]
    for metric in (*FUSION_METRICS, "mIoU"):
        assert metric in header
    assert column_best(headline, "EN") == {"ours"}
    assert column_best(headline, "SD") == {"peerX"}
    assert column_best(headline, "SSIM") == {"ours", "maximum"}
    assert column_best(headline, "mIoU") == {"ours"}
    assert column_best(headline, "VIF") == {"ours"}
    vif = header.index("VIF")
    assert headline[2][vif][0] == "–"  # average has no VIF
    ours_en = headline[1][header.index("EN")][0]
    assert ours_en == f"{format_number(1.3)} ★"
    assert [text for text, _ in per_class[0]][2:] == CLASS_NAMES
    assert column_best(per_class, "person") == {"ours"}
    assert column_best(per_class, "background") == set()  # every method ties: no winner
    # The segmenter on fused images vs on each source alone (the sources are the same for every method).
    assert [text for text, _ in by_input[0]][2:] == ["mIoU (fused)", "mIoU_ir (infrared only)", "mIoU_vi (visible only)"]
    assert column_best(by_input, "mIoU (fused)") == {"ours"}


def test_differences_with_intervals_in_both_reports(built_report: ProjectPaths) -> None:
    against, sources = read_tables((built_report.reports / "index.html").read_text())[3:]
    assert [text for text, _ in against[0]] == ["metric", "ours − average", "ours − maximum", "ours − peerX"]
    rows = {row[0][0]: [text for text, _ in row[1:]] for row in against[1:]}
    # EN differs by the same amount on every image: no spread, the interval is that amount.
    assert rows["EN"] == ["+0.3000 [+0.3000, +0.3000] ▲", "+0.2000 [+0.2000, +0.2000] ▲",
                          "+0.1000 [+0.1000, +0.1000] ▲"]
    # Set-level mIoU from the confusion matrices where both methods carry them, else no cell.
    from uaafusion.metrics.comparison import set_miou

    ours_minus_average = set_miou(np.array(fake_confusion(100))) - set_miou(np.array(fake_confusion(60)))
    assert rows["mIoU"][0] == f"+{ours_minus_average:.4f} [+{ours_minus_average:.4f}, +{ours_minus_average:.4f}] ▲"
    assert rows["mIoU"][1:] == ["–", "–"]
    assert [text for text, _ in sources[0]] == ["method", "mIoU: fused − infrared", "mIoU: fused − visible"]
    assert [row[0][0] for row in sources[1:]] == ["ours", "average"]
    assert sources[1][2][0] == "+0.0000 [+0.0000, +0.0000]"  # unresolved: no mark
    markdown = (built_report.reports / "README.md").read_text()
    assert "## Differences: ours minus each other method" in markdown
    assert "| EN | +0.3000 [+0.3000, +0.3000] ▲ |" in markdown
    assert "paired bootstrap draws of the test images" in markdown


def test_html_is_self_contained_with_embedded_figures(built_report: ProjectPaths) -> None:
    html_text = (built_report.reports / "index.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', html_text)
    assert len(sources) == 2 + 2  # loss, validation rounds, two samples
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(?!data:)[^"#]', html_text)
    assert "dvc repro" in html_text and "params.yaml" in html_text
    assert "peerX" in html_text


def test_figures_and_markdown_twin(built_report: ProjectPaths) -> None:
    figures = built_report.reports / "figures"
    names = sorted(path.name for path in figures.glob("*.png"))
    assert names == ["sample_s1.png", "sample_s2.png", "training_loss.png", "validation_rounds.png"]
    for path in figures.glob("*.png"):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width <= 1400 and image.height <= 1000
    grid = np.asarray(Image.open(figures / "sample_s1.png").convert("RGB"))
    assert grid.std() > 10  # not blank
    markdown = (built_report.reports / "README.md").read_text()
    for name in names:
        assert f"(figures/{name})" in markdown
    assert "| **ours** |" in markdown
    assert f"**{format_number(99.0)}** ★" in markdown
    assert "dvc repro" in markdown and "```yaml" in markdown


def test_report_needs_the_evaluation_and_notes_other_missing_inputs(tmp_path: Path) -> None:
    paths = ProjectPaths.at(tmp_path)
    params = params_from_dict(project_params(report={"samples": 1}))
    with pytest.raises(DataError, match="evaluation.json"):
        build_report(params, paths)
    write_tiny_dataset(tmp_path / "data" / "tiny")
    write_evaluation(paths)
    index = build_report(params, paths)  # no CSVs, no model, no fused images
    html_text = index.read_text()
    assert "No training losses found" in html_text
    assert "No model checkpoint" in html_text
    assert html_text.count("data:image/png;base64,") == 1  # the sample grid, with empty model panels


def test_method_order_and_best_helpers() -> None:
    assert method_order(["zeta", "maximum", "peer", "ours", "average"], peers=["peer"]) == [
        "ours", "average", "maximum", "peer", "zeta"]
    values = {"a": {"x": 1.0}, "b": {"x": None}, "c": {"x": 1.0 + 1e-13}, "d": {"x": float("nan")}}
    assert best_methods(values, "x") == {"a", "c"}
    assert best_methods({"a": {"x": None}}, "x") == set()
    assert format_number(None) == "–"
    assert format_number(0.123456) == "0.1235"
    assert format_number(45.678) == "45.68"


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(built_report: ProjectPaths, tmp_path: Path) -> None:
    screenshot = tmp_path / "report.png"
    index = built_report.reports / "index.html"
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--hide-scrollbars", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--screenshot={screenshot}", "--window-size=1200,2000", index.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert screenshot.is_file(), f"chromium wrote no screenshot: {result.stderr[-2000:]}"
    keep = built_report.reports / "report_screenshot.png"
    shutil.copy(screenshot, keep)  # for a person to look at
    pixels = np.asarray(Image.open(screenshot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.std() > 20
    non_white = (pixels < 240).any(axis=-1).mean()
    assert non_white > 0.05, "the rendered page is (almost) blank"
    # The metrics table's best cells are tinted green (#d9f2d9).
    green = (np.abs(pixels - np.array([217, 242, 217])).sum(axis=-1) < 6).sum()
    assert green > 200


def test_preset_report_goes_to_its_outputs_with_generalisation_tables_and_its_command(tmp_path: Path) -> None:
    outputs = {"models": "models/preset", "fused": "data/fused-preset", "reports": "reports/preset"}
    raw = project_params(outputs=outputs, report={"samples": 1})
    raw["evaluate"]["generalisation"] = {"roadlike": "data/roadlike"}
    preset = tmp_path / "params" / "preset.yaml"
    preset.parent.mkdir()
    preset.write_text(yaml.safe_dump(raw))
    params = params_from_dict(raw)
    paths = ProjectPaths.at(tmp_path, params.outputs)
    assert paths.reports == tmp_path / "reports" / "preset" and paths.fused == tmp_path / "data" / "fused-preset"
    assert paths.model_checkpoint == tmp_path / "models" / "preset" / "uaafusion.pt"
    write_tiny_dataset(tmp_path / "data" / "tiny")
    write_evaluation(paths)
    generalisation = {"roadlike": {"root": "data/roadlike", "methods": {
        method: {"mean": {metric: 1.0 + offset for metric in FUSION_METRICS}, "count": 5}
        for method, offset in (("ours", 0.5), ("average", 0.0), ("maximum", 0.2))}}}
    paths.generalisation.write_text(json.dumps(generalisation))

    # The run used an override: the report's parameters and its command say so.
    assert cli_main(["report", "--params", str(preset), "--root", str(tmp_path), "-S", "loss.class_balance=0.25"]) == 0
    assert not (tmp_path / "reports" / "index.html").exists()
    html_text = (paths.reports / "index.html").read_text()
    markdown = (paths.reports / "README.md").read_text()
    tables = read_tables(html_text)
    general = tables[-1]
    assert [row[0][0] for row in general[1:]] == ["ours", "average", "maximum"]
    assert column_best(general, "VIF") == {"ours"}
    assert "Generalisation: roadlike" in html_text and "Generalisation: roadlike" in markdown
    assert ("uaafusion train --params params/preset.yaml --steps prepare,train,evaluate,report"
            " -S loss.class_balance=0.25") in markdown
    assert "class_balance: 0.25" in markdown
    assert "dvc repro\n" not in markdown
    # A malformed override is refused (exit 2, message on stderr) before anything is built.
    assert cli_main(["report", "--params", str(preset), "--root", str(tmp_path), "-S", "loss.class_balance"]) == 2


def test_discussion_file_becomes_a_section_of_both_reports_and_a_missing_one_is_named(tmp_path: Path) -> None:
    paths = ProjectPaths.at(tmp_path)
    write_tiny_dataset(tmp_path / "data" / "tiny")
    write_evaluation(paths)
    missing = params_from_dict(project_params(report={"samples": 0, "discussion": "notes/missing.md"}))
    with pytest.raises(DataError, match=r"report.discussion.*missing\.md"):
        build_report(missing, paths)

    notes = tmp_path / "notes" / "run.md"
    notes.parent.mkdir()
    notes.write_text("### Why\n\nOurs <wins> on `VIF`\nbecause of A.\n\n- first\n  continued\n- second\n\n"
                     "```sh\nuaafusion train --params p.yaml\n```\n")
    params = params_from_dict(project_params(report={"samples": 0, "discussion": "notes/run.md"}))
    html_text = build_report(params, paths).read_text()
    markdown = (paths.reports / "README.md").read_text()
    assert "## Discussion\n\n### Why\n\nOurs <wins> on `VIF`" in markdown
    assert markdown.index("## Discussion") < markdown.index("## Training")
    assert "<h2>Discussion</h2>\n<h3>Why</h3>\n<p>Ours &lt;wins&gt; on <code>VIF</code> because of A.</p>" in html_text
    assert "<ul><li>first continued</li><li>second</li></ul>" in html_text
    assert "<pre>uaafusion train --params p.yaml</pre>" in html_text


def test_discussion_only_rewrites_that_section_as_a_full_build_would(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    paths = ProjectPaths.at(tmp_path)
    write_tiny_dataset(tmp_path / "data" / "tiny")
    write_evaluation(paths)
    notes = tmp_path / "notes.md"
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(project_params(report={"samples": 1, "discussion": "notes.md"})))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # marks the project root for the CLI

    def full_build(text: str) -> tuple[str, str]:
        notes.write_text(text)
        assert cli_main(["report", "--params", str(params_file)]) == 0
        return (paths.reports / "index.html").read_text(), (paths.reports / "README.md").read_text()

    old = ("### Before\n\nThe first version, with `code`.\n\n### Training notes\n\n- ours <wins>\n\n"
           "```sh\n## Training\n```\n")  # a line like the next section's heading, inside the discussion
    new = "### After\n\nThe second version:\n\n```sh\n## not a heading\nuaafusion fuse\n```\n"
    full_build(old)
    figure = next((paths.reports / "figures").glob("sample_*.png"))
    figure_bytes = figure.read_bytes()
    shutil.rmtree(tmp_path / "data" / "tiny")  # no data needed (and no model was ever there)
    notes.write_text(new)
    assert cli_main(["report", "--params", str(params_file), "--discussion-only"]) == 0
    assert "discussion refreshed in" in capsys.readouterr().out
    refreshed = (paths.reports / "index.html").read_text(), (paths.reports / "README.md").read_text()
    assert "The first version" not in refreshed[0] + refreshed[1]
    assert figure.read_bytes() == figure_bytes
    write_tiny_dataset(tmp_path / "data" / "tiny")
    assert refreshed == full_build(new)  # byte for byte what a full build writes

    # An empty discussion removes the section; refreshing again puts it back where it was.
    params = params_from_dict(project_params(report={"samples": 1, "discussion": None}))
    refresh_report(params, paths, ["discussion"])
    assert "## Discussion" not in (paths.reports / "README.md").read_text()
    assert "<h2>Discussion</h2>" not in (paths.reports / "index.html").read_text()
    assert cli_main(["report", "--params", str(params_file), "--discussion-only"]) == 0
    assert ((paths.reports / "index.html").read_text(), (paths.reports / "README.md").read_text()) == refreshed

    # Without a report there is nothing to refresh: the error names the file and what to do.
    (paths.reports / "README.md").unlink()
    with pytest.raises(DataError, match=r"README\.md.*uaafusion report"):
        refresh_report(params, paths, ["discussion"])
    with pytest.raises(ValueError, match="figures.*tables, discussion"):
        refresh_report(params, paths, ["figures"])


def test_tables_only_rewrites_the_summary_and_every_table_from_the_evaluation_as_a_full_build_would(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = ProjectPaths.at(tmp_path)
    write_tiny_dataset(tmp_path / "data" / "tiny")
    evaluation = write_evaluation(paths)  # no training curves: the report notes their absence
    (tmp_path / "notes.md").write_text("### Why\n\nBecause.\n")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(project_params(report={"samples": 1, "discussion": "notes.md"})))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")

    def full_build() -> tuple[str, str]:
        assert cli_main(["report", "--params", str(params_file)]) == 0
        return (paths.reports / "index.html").read_text(), (paths.reports / "README.md").read_text()

    def current() -> tuple[str, str]:
        return (paths.reports / "index.html").read_text(), (paths.reports / "README.md").read_text()

    full_build()
    figures = {path: path.read_bytes() for path in (paths.reports / "figures").glob("*.png")}
    assert len(figures) == 1  # one sample
    assert "> Note: No training losses found" in current()[1]
    # A report built before it had the difference tables (as the committed MSRS one was), and an
    # evaluation re-scored since: ours now wins EN everywhere by more, on one more image.
    old_html, old_markdown = current()
    first, after = "\n## Differences: ours minus each other method\n", "\n## Training\n"
    (paths.reports / "README.md").write_text(
        old_markdown[:old_markdown.index(first) + 1] + old_markdown[old_markdown.index("## Discussion"):])
    for per_image in evaluation["ours"]["per_image"].values():
        per_image["EN"] += 1.0
    evaluation["ours"]["mean"]["EN"] += 1.0
    evaluation["ours"]["count"] = 4
    paths.evaluation.write_text(json.dumps(evaluation))
    shutil.rmtree(tmp_path / "data" / "tiny")  # no data needed
    assert cli_main(["report", "--params", str(params_file), "--tables-only"]) == 0
    assert "tables refreshed in" in capsys.readouterr().out
    refreshed = current()
    assert first in refreshed[1] and refreshed[1].index(first) < refreshed[1].index("## Discussion")
    assert refreshed[1].index("## Discussion") < refreshed[1].index(after)
    assert "(4 test images)" in refreshed[1] and "(4 test images)" not in old_markdown  # the summary
    assert "> Note: No training losses found" in refreshed[1]
    assert {path: path.read_bytes() for path in figures} == figures
    write_tiny_dataset(tmp_path / "data" / "tiny")
    assert refreshed == full_build()  # byte for byte what a full build writes

    # Both at once, and without a Discussion section: the tables still end before Training.
    (tmp_path / "notes.md").write_text("\n")
    assert cli_main(["report", "--params", str(params_file), "--tables-only", "--discussion-only"]) == 0
    assert "tables and discussion refreshed" in capsys.readouterr().out
    assert "## Discussion" not in current()[1]
    assert current() == full_build()

    # evaluation.json is still needed: the error says so.
    paths.evaluation.unlink()
    with pytest.raises(DataError, match="evaluation"):
        refresh_report(params_from_dict(project_params()), paths, ["tables"])


def test_discussion_parameter_is_checked() -> None:
    from uaafusion.errors import ConfigError

    with pytest.raises(ConfigError, match="report.discussion"):
        params_from_dict(project_params(report={"discussion": "  "}))
