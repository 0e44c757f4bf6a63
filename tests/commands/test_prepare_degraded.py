"""``uaafusion prepare --degraded``: one degraded copy of the test split per kind, a dataset of the same layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import yaml

from tests.metrics.evaluation_fixtures import save_image, smooth_image
from uaafusion.cli import main
from uaafusion.config import load_params
from uaafusion.data.datasets import create_dataset

HEIGHT, WIDTH = 40, 52
CLASS_NAMES = ["background", "person", "bicycle", "car"]
BOXES = {"n1": ["0 0.5 0.5 0.4 0.5", "2 0.2 0.3 0.2 0.2"], "n2": [], "n3": ["1 0.7 0.6 0.3 0.4"]}


def write_boxes_dataset(root: Path) -> None:
    """``root/test/{ir,vi,boxes}`` (gray png infrared, colour png / gray jpg visible) and ``root/classes.txt``."""
    for index, (name, lines) in enumerate(BOXES.items()):
        save_image(root / "test" / "ir" / f"{name}.png", smooth_image(HEIGHT, WIDTH, 10 * index))
        if index == 1:
            save_image(root / "test" / "vi" / f"{name}.jpg", smooth_image(HEIGHT, WIDTH, 10 * index + 1))
        else:
            channels = [smooth_image(HEIGHT, WIDTH, 10 * index + channel) for channel in (1, 2, 3)]
            save_image(root / "test" / "vi" / f"{name}.png", np.stack(channels, axis=-1))
        (root / "test" / "boxes").mkdir(parents=True, exist_ok=True)
        (root / "test" / "boxes" / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))
    (root / "classes.txt").write_text("".join(f"{index} {name}\n" for index, name in enumerate(CLASS_NAMES[1:])))


def write_params(tmp_path: Path, layout: str = "boxes") -> Path:
    raw = {
        "device": "cpu",
        "data": {"layout": layout, "root": "data/boxes", "num_classes": 4, "class_names": CLASS_NAMES},
        "evaluate": {"degraded": {"kinds": ["blur"], "severity": 0.7, "seed": 5, "root": "out/degraded"}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_prepare_degraded_writes_one_dataset_per_kind(tmp_path, capsys):
    source = tmp_path / "data" / "boxes"
    write_boxes_dataset(source)
    params_path = write_params(tmp_path)
    root = tmp_path / "out" / "degraded"
    arguments = ["prepare", "--degraded", "--params", str(params_path), "--kind", "noise", "--kind", "ir_stripes"]

    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 degraded test sets" in printed and "noise, ir_stripes" in printed
    assert sorted(path.name for path in root.iterdir()) == ["degradation.json", "ir_stripes", "noise"]
    summary = json.loads((root / "degradation.json").read_text())
    assert summary["severity"] == 0.7 and summary["seed"] == 5 and set(summary["sets"]) == {"noise", "ir_stripes"}

    params = load_params(params_path)
    for kind, changed in (("noise", "vi"), ("ir_stripes", "ir")):
        folder = root / kind
        assert sorted(path.name for path in folder.iterdir()) == ["boxes", "classes.txt", "degradation.json", "ir", "vi"]
        assert folder_bytes(folder / "boxes") == folder_bytes(source / "test" / "boxes")
        assert (folder / "classes.txt").read_bytes() == (source / "classes.txt").read_bytes()
        for role in ("ir", "vi"):
            written, original = folder_bytes(folder / role), folder_bytes(source / "test" / role)
            assert sorted(written) == sorted(original)  # same names and extensions
            assert (written == original) == (role != changed), (kind, role)
        manifest = json.loads((folder / "degradation.json").read_text())
        assert (manifest["kinds"], manifest["severity"], manifest["seed"]) == ([kind], 0.7, 5)

        dataset = create_dataset(dataclasses.replace(params.data, root=str(folder)), None, crop=False)
        assert len(dataset) == 3 and [record.name for record in dataset.records] == list(BOXES)
        clean = create_dataset(params.data, "test", crop=False, root_override=source)
        for index in range(3):
            sample, reference = dataset[index], clean[index]
            assert sample["ir"].shape == (1, HEIGHT, WIDTH)
            assert np.array_equal(sample["label"].numpy(), reference["label"].numpy())  # boxes -> same labels
            assert np.array_equal(sample["roi"].numpy(), reference["roi"].numpy())
            assert not np.array_equal(sample[changed].numpy(), reference[changed].numpy())

    before = folder_bytes(root)
    assert main(arguments) == 0  # a rerun rebuilds the sets with identical bytes
    assert folder_bytes(root) == before


def test_prepare_degraded_uses_the_configured_kinds(tmp_path):
    write_boxes_dataset(tmp_path / "data" / "boxes")
    assert main(["prepare", "--degraded", "--params", str(write_params(tmp_path))]) == 0
    assert sorted(path.name for path in (tmp_path / "out" / "degraded").iterdir()) == ["blur", "degradation.json"]


def test_prepare_degraded_refuses_the_fmb_layout(tmp_path, capsys):
    for folder in ("Infrared", "Visible", "Label"):
        save_image(tmp_path / "data" / "boxes" / "test" / folder / "n1.png", np.zeros((HEIGHT, WIDTH), np.uint8))
    assert main(["prepare", "--degraded", "--params", str(write_params(tmp_path, layout="fmb"))]) == 2
    error = capsys.readouterr().err
    assert "fmb" in error and "msrs, boxes, pairs" in error
    assert not (tmp_path / "out").exists()


def test_prepare_degraded_names_an_unknown_kind(tmp_path, capsys):
    write_boxes_dataset(tmp_path / "data" / "boxes")
    assert main(["prepare", "--degraded", "--params", str(write_params(tmp_path)), "--kind", "fog"]) == 2
    error = capsys.readouterr().err
    assert "'fog'" in error and "--kind" in error
    assert not (tmp_path / "out").exists()


def test_kind_without_degraded_is_refused(tmp_path, capsys):
    write_boxes_dataset(tmp_path / "data" / "boxes")
    assert main(["prepare", "--params", str(write_params(tmp_path)), "--kind", "noise"]) == 2
    assert "--degraded" in capsys.readouterr().err
