"""The metric tables: every method in report order, the best value per column marked."""

from __future__ import annotations

from tests.report.fake_project import CLASS_NAMES, METHODS, column_best, read_tables, texts
from uaafusion.paths import ProjectPaths
from uaafusion.report import FUSION_METRICS
from uaafusion.report.tables import best_methods, format_number, method_order


def test_metric_tables_list_every_method_and_mark_the_best(built_report: ProjectPaths) -> None:
    headline, per_class, by_input, *_ = read_tables((built_report.reports / "index.html").read_text())
    header = texts(headline[0])
    assert [row[0][0] for row in headline[1:]] == METHODS
    assert header[:2 + len(FUSION_METRICS) + 2] == ["method", "images", *FUSION_METRICS, "mIoU", "pixel_accuracy"]
    assert column_best(headline, "EN") == {"ours"}
    assert column_best(headline, "SD") == {"peerX"}
    assert column_best(headline, "SSIM") == {"ours", "maximum"}
    assert column_best(headline, "VIF") == {"ours"}
    assert headline[2][header.index("VIF")][0] == "–"  # average has no VIF
    assert headline[1][header.index("EN")][0] == f"{format_number(1.3)} ★"
    assert texts(per_class[0])[2:] == CLASS_NAMES
    assert column_best(per_class, "person") == {"ours"}
    assert column_best(per_class, "background") == set()  # every method ties: no winner
    # The segmenter on fused images vs on each source alone (the sources are the same for every method).
    assert texts(by_input[0])[2:] == ["mIoU (fused)", "mIoU_ir (infrared only)", "mIoU_vi (visible only)"]
    assert column_best(by_input, "mIoU (fused)") == {"ours"}
    markdown = (built_report.reports / "README.md").read_text()
    assert "| **ours** | 3 | **1.3000** ★ |" in markdown
    assert f"| peerX | 3 | 1.2000 | **{format_number(99.0)}** ★ |" in markdown


def test_method_order_best_and_number_format() -> None:
    assert method_order(["zeta", "maximum", "peer", "ours", "average"], peers=["peer"]) == [
        "ours", "average", "maximum", "peer", "zeta"]
    values = {"a": {"x": 1.0}, "b": {"x": None}, "c": {"x": 1.0 + 1e-13}, "d": {"x": float("nan")}}
    assert best_methods(values, "x") == {"a", "c"}
    assert best_methods({"a": {"x": None}}, "x") == set()
    assert [format_number(value) for value in (None, 0.123456, 45.678, 1234.56)] == ["–", "0.1235", "45.68", "1234.6"]
