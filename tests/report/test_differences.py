"""The comparison tables, read from the evaluate step's comparison.json."""

from __future__ import annotations

import numpy as np

from tests.report.fake_project import fake_confusion, read_tables, texts
from uaafusion.config import load_params
from uaafusion.metrics.comparison import set_miou
from uaafusion.paths import ProjectPaths
from uaafusion.report import build_report, render_report


def test_differences_with_intervals_in_both_pages_in_report_order(built_report: ProjectPaths) -> None:
    against, sources = read_tables((built_report.reports / "index.html").read_text())[3:5]
    # comparison.json lists the methods in reverse: the report orders them ours, baselines, peers.
    assert texts(against[0]) == ["metric", "ours − average", "ours − maximum", "ours − peerX"]
    rows = {row[0][0]: texts(row[1:]) for row in against[1:]}
    # EN differs by the same amount on every image: no spread, the interval is that amount.
    assert rows["EN"] == ["+0.3000 [+0.3000, +0.3000] ▲", "+0.2000 [+0.2000, +0.2000] ▲",
                          "+0.1000 [+0.1000, +0.1000] ▲"]
    # Set-level mIoU from the confusion matrices where both methods carry them, else no cell.
    difference = set_miou(np.array(fake_confusion(100))) - set_miou(np.array(fake_confusion(60)))
    assert rows["mIoU"] == [f"+{difference:.4f} [+{difference:.4f}, +{difference:.4f}] ▲", "–", "–"]
    assert texts(sources[0]) == ["method", "mIoU: fused − infrared", "mIoU: fused − visible"]
    assert [row[0][0] for row in sources[1:]] == ["ours", "average"]
    assert sources[1][2][0] == "+0.0000 [+0.0000, +0.0000]"  # unresolved: no mark
    markdown = (built_report.reports / "README.md").read_text()
    assert "## Differences: ours minus each other method" in markdown
    assert "| EN | +0.3000 [+0.3000, +0.3000] ▲ | +0.2000 [+0.2000, +0.2000] ▲ |" in markdown
    assert "paired bootstrap draws of the test images (seed 0; `uaafusion compare`)" in markdown


def test_a_missing_comparison_is_noted_and_its_tables_left_out(project: ProjectPaths) -> None:
    project.comparison.unlink()
    html_text = render_report(load_params(project.params), project).read_text()
    markdown = (project.reports / "README.md").read_text()
    assert "Note: No comparison.json in the report folder" in html_text
    assert "> Note: No comparison.json in the report folder" in markdown
    assert "Differences:" not in html_text + markdown
    assert len(read_tables(html_text)) == 3  # headline, per class, by input
    project.comparison.write_text("{}")
    build_report(load_params(project.params), project)
    assert "comparison.json: not a comparison document" in (project.reports / "README.md").read_text()
