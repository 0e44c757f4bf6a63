"""The degraded benchmark's tables in both pages, from ``degraded.json``."""

from __future__ import annotations

import json

from tests.report.fake_project import SAMPLE_NAMES, fake_confusion, read_tables, texts
from uaafusion.config import load_params
from uaafusion.metrics.comparison import compare_methods
from uaafusion.paths import ProjectPaths
from uaafusion.report import render_report

METHODS = {"ours": 0.5, "average": 0.2, "maximum": 0.3, "clean-trained": 0.4}


def degraded_document() -> dict:
    """Two sets; ours leads clean-trained on haze (every image), trails it on ir_stripes."""
    sets = {}
    for kind, sign in (("haze", 1.0), ("ir_stripes", -1.0)):
        results = {}
        for method, level in METHODS.items():
            shift = sign * level if method in ("ours", "clean-trained") else level
            per_image = {name: {"VIF": shift + 0.01 * index, "Qabf": 0.3 + 0.01 * index}
                         for index, name in enumerate(SAMPLE_NAMES)}
            results[method] = {"per_image": per_image, "count": len(SAMPLE_NAMES),
                               "mean": {"VIF": sum(row["VIF"] for row in per_image.values()) / 3, "Qabf": 0.31,
                                        "box_mIoU": 0.5 if method == "ours" else 0.4},
                               "confusion": {"box_mIoU": {name: fake_confusion(90 if method == "ours" else 50)
                                                          for name in SAMPLE_NAMES}}}
        sets[kind] = {"mean": {method: result["mean"] for method, result in results.items()},
                      "comparison": compare_methods(results, "ours", skip_unpaired=True).to_json()}
    return {"severity": 0.5, "seed": 0, "root": "data/degraded", "sets": sets}


def test_degraded_tables_show_means_and_differences_with_intervals(project: ProjectPaths) -> None:
    project.degraded.write_text(json.dumps(degraded_document()))
    html_text = render_report(load_params(project.params), project).read_text()
    tables = read_tables(html_text)
    assert "Degraded test sets (severity 0.5, seed 0): VIF of each method, against the clean sources" in html_text
    vif = next(table for table in tables if texts(table[0]) == ["degradation", "ours", "average", "maximum",
                                                                 "clean-trained"]
               and table[1][1][0].startswith("0.5100"))
    assert [row[0][0] for row in vif[1:]] == ["haze", "ir_stripes"]
    assert vif[1][1][1] and not vif[2][1][1]  # ours best on haze only
    qabf = next(table for table in tables if table[0][0][0] == "degradation" and table[1][1][0].startswith("0.3100"))
    assert not any(marked for row in qabf[1:] for _, marked in row)  # every method ties: no mark
    differences = next(table for table in tables if texts(table[0])[:2] == ["degradation", "VIF: ours − clean-trained"])
    haze, stripes = differences[1], differences[2]
    assert haze[1][0].startswith("+0.1000") and haze[1][0].endswith("▲")
    assert stripes[1][0].startswith("-0.1000") and stripes[1][0].endswith("▼")
    assert "box_mIoU: ours − clean-trained" in texts(differences[0])
    markdown = (project.reports / "README.md").read_text()
    assert "## Degraded test sets (severity 0.5, seed 0): ours minus clean-trained" in markdown


def test_no_degraded_file_means_no_degraded_tables(project: ProjectPaths) -> None:
    html_text = render_report(load_params(project.params), project).read_text()
    assert "Degraded test sets" not in html_text
