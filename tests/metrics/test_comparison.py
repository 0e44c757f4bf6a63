"""Paired bootstrap comparisons of evaluation results (uaafusion.metrics.comparison)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uaafusion.errors import ConfigError, DataError
from uaafusion.metrics.comparison import (
    Difference,
    bootstrap_draws,
    class_names,
    compare_methods,
    compare_results,
    compare_sources,
    draw_counts,
    format_difference,
    mean_difference,
    miou_difference,
    named_results,
    set_class_iou,
    set_miou,
)
from uaafusion.metrics.segmentation import ConfusionMatrix


def _result(values: dict[str, dict[str, float | None]], confusion: dict | None = None) -> dict:
    result: dict = {"per_image": values, "mean": {}, "count": len(values)}
    if confusion is not None:
        result["confusion"] = confusion
    return result


def _random_confusions(generator: np.random.Generator, images: int, classes: int = 3) -> np.ndarray:
    return generator.integers(0, 50, size=(images, classes, classes))


def test_draws_are_seeded_and_in_range() -> None:
    draws = bootstrap_draws(7, resamples=300, seed=4)
    assert draws.shape == (300, 7) and draws.min() >= 0 and draws.max() <= 6
    assert np.array_equal(draws, bootstrap_draws(7, resamples=300, seed=4))
    assert not np.array_equal(draws, bootstrap_draws(7, resamples=300, seed=5))
    with pytest.raises(DataError, match="no image"):
        bootstrap_draws(0)
    with pytest.raises(ConfigError, match="resamples"):
        bootstrap_draws(3, resamples=0)


def test_a_consistent_gain_is_resolved_and_noise_is_not() -> None:
    generator = np.random.default_rng(0)
    base = generator.normal(0.7, 0.2, size=60)
    draws = bootstrap_draws(60)
    gain = mean_difference("VIF", base + 0.05 + generator.normal(0, 0.01, 60), base, draws)
    assert gain.estimate == pytest.approx(0.05, abs=0.005)
    assert 0 < gain.low < gain.estimate < gain.high and gain.verdict == "higher"
    loss = mean_difference("VIF", base, base + 0.05 + generator.normal(0, 0.01, 60), draws)
    assert loss.verdict == "lower" and loss.high < 0
    noise = mean_difference("VIF", base + generator.normal(0, 0.1, 60), base + generator.normal(0, 0.1, 60), draws)
    assert noise.low < 0 < noise.high and noise.verdict == "unclear"
    same = mean_difference("VIF", base, base, draws)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_the_interval_narrows_as_the_confidence_falls() -> None:
    generator = np.random.default_rng(1)
    first, second = generator.normal(0, 1, 40), generator.normal(0, 1, 40)
    draws = bootstrap_draws(40)
    wide = mean_difference("SD", first, second, draws, confidence=0.99)
    narrow = mean_difference("SD", first, second, draws, confidence=0.5)
    assert wide.low < narrow.low < narrow.high < wide.high
    with pytest.raises(ConfigError, match="confidence"):
        mean_difference("SD", first, second, draws, confidence=1.0)


def test_undefined_values_are_left_out_of_every_mean() -> None:
    first = np.array([1.0, np.nan, 3.0, 5.0])
    second = np.array([0.0, 2.0, np.nan, 1.0])
    difference = mean_difference("ROI_SSIM", first, second, bootstrap_draws(4, resamples=500))
    assert difference.images == 2
    assert difference.estimate == pytest.approx(((1 - 0) + (5 - 1)) / 2)
    assert 1.0 <= difference.low <= difference.high <= 4.0  # each draw's mean lies between the two differences


def test_set_miou_matches_the_confusion_matrix() -> None:
    generator = np.random.default_rng(2)
    for _ in range(5):
        matrix = ConfusionMatrix(4)
        matrix.matrix = generator.integers(0, 20, size=(4, 4))
        matrix.matrix[3, :] = 0
        matrix.matrix[:, 3] = 0  # a class absent from targets and predictions is left out
        assert set_miou(matrix.matrix) == pytest.approx(matrix.miou())
        per_class = [set_class_iou(matrix.matrix, index) for index in range(4)]
        np.testing.assert_allclose(per_class, matrix.per_class_iou())  # nan for the absent class too
    assert np.isnan(set_miou(np.zeros((3, 3))))


def test_draw_counts_count_each_image_per_draw() -> None:
    draws = bootstrap_draws(5, resamples=40, seed=7)
    counts = draw_counts(draws, 5)
    assert counts.shape == (40, 5) and (counts.sum(axis=1) == 5).all()
    for row, drawn in zip(counts, draws):
        assert row.tolist() == np.bincount(drawn, minlength=5).tolist()


def test_miou_difference_is_set_level_on_every_draw() -> None:
    generator = np.random.default_rng(3)
    first, second = _random_confusions(generator, 12), _random_confusions(generator, 12)
    draws = bootstrap_draws(12, resamples=200)
    difference = miou_difference("box_mIoU", first, second, draws)
    assert difference.estimate == pytest.approx(set_miou(first.sum(0)) - set_miou(second.sum(0)))
    one_draw = draws[:1]
    single = miou_difference("box_mIoU", first, second, one_draw, confidence=0.5)
    expected = set_miou(first[one_draw[0]].sum(0)) - set_miou(second[one_draw[0]].sum(0))
    assert single.low == pytest.approx(expected) and single.high == pytest.approx(expected)
    with pytest.raises(DataError, match="same classes"):
        miou_difference("box_mIoU", first, second[:, :2, :2], draws)


def test_compare_results_pairs_images_by_name() -> None:
    first = _result({"a": {"VIF": 1.0, "SSIM": 1.5, "box_mIoU": 0.3}, "b": {"VIF": 0.8, "SSIM": 1.4, "box_mIoU": 0.2},
                     "only_first": {"VIF": 9.0, "SSIM": 9.0, "box_mIoU": 0.9}})
    second = _result({"b": {"VIF": 0.7, "SSIM": 1.4}, "a": {"VIF": 0.6, "SSIM": 1.3}})
    differences = compare_results(first, second, resamples=100)
    assert set(differences) == {"VIF", "SSIM"}  # the per-image box_mIoU is not a set-level value
    assert differences["VIF"].images == 2
    assert differences["VIF"].estimate == pytest.approx(((1.0 - 0.6) + (0.8 - 0.7)) / 2)
    with pytest.raises(DataError, match="ours and peer share no scored image"):
        compare_results(first, _result({"z": {"VIF": 1.0}}), names=("ours", "peer"))
    with pytest.raises(ConfigError, match="'Qabf'.*Choose from: VIF, SSIM"):
        compare_results(first, second, metrics=["Qabf"])


def test_compare_results_and_sources_use_the_confusion_matrices() -> None:
    generator = np.random.default_rng(4)
    names = [f"image{index}" for index in range(8)]

    def with_confusion(shift: int) -> dict:
        matrices = {key: {name: (_random_confusions(generator, 1)[0] + shift * np.eye(3, dtype=int) * (key == "box_mIoU"))
                          .tolist() for name in names}
                    for key in ("box_mIoU", "box_mIoU_ir", "box_mIoU_vi")}
        return _result({name: {"VIF": 1.0} for name in names}, matrices)

    ours, peer = with_confusion(200), with_confusion(0)
    differences = compare_results(ours, peer, resamples=300)
    assert set(differences) == {"VIF", "box_mIoU"}  # the sources' keys are compare_sources' job
    assert differences["box_mIoU"].verdict == "higher"
    sources = compare_sources(ours, resamples=300)
    assert set(sources) == {"box_mIoU - box_mIoU_ir", "box_mIoU - box_mIoU_vi"}
    fused = np.asarray([ours["confusion"]["box_mIoU"][name] for name in sorted(names)]).sum(0)
    infrared = np.asarray([ours["confusion"]["box_mIoU_ir"][name] for name in sorted(names)]).sum(0)
    assert sources["box_mIoU - box_mIoU_ir"].estimate == pytest.approx(set_miou(fused) - set_miou(infrared))
    assert sources["box_mIoU - box_mIoU_ir"].verdict == "higher"
    assert compare_sources(_result({"a": {"VIF": 1.0}})) == {}


def test_named_results_and_formatting() -> None:
    single = _result({"a": {"VIF": 1.0}})
    assert named_results(single, "ours") == {"ours": single}
    pipeline = {"ours": single, "average": _result({"a": {"VIF": 0.5}})}
    assert list(named_results(pipeline, "ignored")) == ["ours", "average"]
    with pytest.raises(DataError, match="metrics.json: not an evaluation result"):
        named_results({"ours": {"VIF": 1.0}}, "x", "metrics.json")
    difference = mean_difference("VIF", np.array([1.0, 1.2]), np.array([0.5, 0.6]), bootstrap_draws(2, 50))
    assert format_difference(difference).startswith("+0.5500 [+")
    assert difference.to_json()["verdict"] == "higher"
    wide = Difference("SD", 11.594, 7.7802, 15.58, 60, 0.95)
    assert format_difference(wide) == "+11.59 [+7.78, +15.58]"  # one precision for the three numbers
    undefined = Difference("mIoU", 0.1, math.nan, math.nan, 3, 0.95)
    assert format_difference(undefined) == "+0.1000 [n/a, n/a]"
    assert undefined.to_json()["low"] is None and undefined.verdict == "unclear"


def test_compare_methods_sets_the_reference_against_every_method_and_flattens() -> None:
    generator = np.random.default_rng(5)
    names = [f"image{index}" for index in range(10)]

    def result(level: float, confusion: bool) -> dict:
        values = {name: {"VIF": level + generator.normal(0, 0.01)} for name in names}
        matrices = ({key: {name: _random_confusions(generator, 1)[0].tolist() for name in names}
                     for key in ("mIoU", "mIoU_ir", "mIoU_vi")} if confusion else None)
        return _result(values, matrices)

    results = {"ours": result(1.0, True), "average": result(0.5, True), "maximum": result(1.5, False),
               "elsewhere": _result({"other": {"VIF": 1.0}})}
    with pytest.raises(DataError, match="ours and elsewhere share no scored image"):
        compare_methods(results, "ours")
    comparison = compare_methods(results, "ours", resamples=200, skip_unpaired=True)
    assert list(comparison.against) == ["average", "maximum"]
    assert set(comparison.against["average"]) == {"VIF", "mIoU"} and set(comparison.against["maximum"]) == {"VIF"}
    assert comparison.against["average"]["VIF"].verdict == "higher"
    assert comparison.against["maximum"]["VIF"].verdict == "lower"
    assert list(comparison.sources) == ["ours", "average"]
    flat = comparison.flat_metrics()
    assert flat["ours-average/VIF"] == comparison.against["average"]["VIF"].estimate
    assert flat["ours-maximum/VIF/low"] == comparison.against["maximum"]["VIF"].low
    assert flat["ours/mIoU-mIoU_ir/high"] == comparison.sources["ours"]["mIoU - mIoU_ir"].high
    assert not any(key.startswith("average/") for key in flat)  # only the reference's own sources
    sources_only = comparison.flat_metrics(against=False)
    assert sources_only == {key: value for key, value in flat.items() if key.startswith("ours/")}
    assert "ours/mIoU-mIoU_vi" in sources_only
    assert comparison.to_json()["against"]["average"]["VIF"]["verdict"] == "higher"
    with pytest.raises(ConfigError, match="reference method 'nope'"):
        compare_methods(results, "nope")


def _classed_result(generator: np.random.Generator, names: list[str], fused_bonus: int) -> dict:
    """Box results with 3 classes (background, person, car) whose fused images find more cars."""
    confusion = {}
    for key, bonus in (("box_mIoU", fused_bonus), ("box_mIoU_ir", 0), ("box_mIoU_vi", 0)):
        confusion[key] = {}
        for name in names:
            matrix = _random_confusions(generator, 1)[0]
            matrix[2, 2] += bonus
            confusion[key][name] = matrix.tolist()
    mean = {"box_mIoU": 0.5, "box_IoU/background": 0.9, "box_IoU/person": 0.2, "box_IoU/car": 0.3}
    return {"per_image": {name: {"VIF": 1.0, "box_mIoU": 0.5} for name in names}, "mean": mean,
            "count": len(names), "confusion": confusion}


def test_per_class_iou_from_the_confusion_matrices() -> None:
    generator = np.random.default_rng(6)
    names = [f"{index:03d}{'D' if index % 2 else 'N'}" for index in range(12)]
    ours, peer = _classed_result(generator, names, 300), _classed_result(generator, names, 0)
    assert class_names(ours, "box_") == ["background", "person", "car"]
    differences = compare_results(ours, peer, resamples=300, per_class=True)
    assert set(differences) == {"VIF", "box_mIoU", "box_IoU/background", "box_IoU/person", "box_IoU/car"}
    stacked = {result_name: np.asarray([result["confusion"]["box_mIoU"][name] for name in sorted(names)]).sum(0)
               for result_name, result in (("ours", ours), ("peer", peer))}
    expected_car = set_class_iou(stacked["ours"], 2) - set_class_iou(stacked["peer"], 2)
    assert differences["box_IoU/car"].estimate == pytest.approx(expected_car)
    assert differences["box_IoU/car"].verdict == "higher"
    assert "box_IoU/car" not in compare_results(ours, peer, resamples=50)  # per class only when asked
    sources = compare_sources(ours, resamples=300, per_class=True)
    assert "box_IoU/car - box_IoU_ir/car" in sources and "box_IoU/person - box_IoU_vi/person" in sources
    assert sources["box_IoU/car - box_IoU_ir/car"].verdict == "higher"


def test_select_restricts_the_images_and_names_a_pattern_without_match() -> None:
    generator = np.random.default_rng(7)
    names = [f"{index:03d}{'D' if index % 2 else 'N'}" for index in range(12)]
    ours, peer = _classed_result(generator, names, 0), _classed_result(generator, names, 0)
    night = compare_results(ours, peer, resamples=100, select="*N")
    assert night["VIF"].images == 6 and night["box_mIoU"].images == 6
    night_names = [name for name in sorted(names) if name.endswith("N")]
    expected = (set_miou(np.asarray([ours["confusion"]["box_mIoU"][name] for name in night_names]).sum(0))
                - set_miou(np.asarray([peer["confusion"]["box_mIoU"][name] for name in night_names]).sum(0)))
    assert night["box_mIoU"].estimate == pytest.approx(expected)
    assert compare_sources(ours, resamples=100, select="*D")["box_mIoU - box_mIoU_ir"].images == 6
    with pytest.raises(DataError, match=r"matching --select '\*X'"):
        compare_results(ours, peer, select="*X")


def test_set_level_keys_never_fall_back_to_per_image_means() -> None:
    without_matrices = _result({"a": {"VIF": 1.0, "box_mIoU": 0.4}, "b": {"VIF": 0.9, "box_mIoU": 0.6}})
    with pytest.raises(ConfigError, match="'box_mIoU' cannot be compared"):
        compare_results(without_matrices, without_matrices, metrics=["box_mIoU"])
    with pytest.raises(ConfigError, match="'box_IoU/car' cannot be compared"):
        compare_results(without_matrices, without_matrices, metrics=["box_IoU/car"])
