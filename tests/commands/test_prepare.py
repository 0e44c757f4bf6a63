"""``uaafusion prepare``: writing the synthetic set and checking a configured dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from uaafusion.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATASETS = (REPO_ROOT / ".." / "shared" / "datasets").resolve()


def write_params(tmp_path: Path, **sections: dict) -> Path:
    """The repository's params.yaml with a small synthetic section and ``sections`` merged in."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["synthetic"] = {"train": 4, "test": 2, "height": 40, "width": 48, "seed": 1}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_prepare_synthetic_writes_the_set(tmp_path, capsys):
    params = write_params(tmp_path)
    out = tmp_path / "synthetic"
    assert main(["prepare", "--synthetic", "--params", str(params), "--out", str(out)]) == 0
    for split, count in (("train", 4), ("test", 2)):
        for folder in ("ir", "vi", "Label"):
            assert len(list((out / split / folder).glob("*.png"))) == count
    assert (out / "montage.png").is_file() and (out / "manifest.json").is_file()
    printed = capsys.readouterr().out
    assert "train: 4 pairs (2 day, 2 night)" in printed and str(out) in printed


def test_prepare_check_counts_the_configured_dataset(tmp_path, capsys):
    out = tmp_path / "synthetic"
    params = write_params(tmp_path, data={"layout": "msrs", "root": str(out)})
    assert main(["prepare", "--synthetic", "--params", str(params), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["prepare", "--check", "--params", str(params)]) == 0
    printed = capsys.readouterr().out
    assert "train: 4 pairs" in printed and "test: 2 pairs" in printed and "(48x40)" in printed
    assert printed.rstrip().endswith("ok")


def test_prepare_check_reports_bad_files_and_fails(tmp_path, capsys):
    out = tmp_path / "synthetic"
    params = write_params(tmp_path, data={"layout": "msrs", "root": str(out)})
    main(["prepare", "--synthetic", "--params", str(params), "--out", str(out)])
    bad = out / "train" / "vi" / "night_0001.png"
    bad.write_bytes(bad.read_bytes()[:100])
    capsys.readouterr()
    assert main(["prepare", "--check", "--params", str(params)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_prepare_check_skip_mode_lists_skipped_files(tmp_path, capsys):
    out = tmp_path / "synthetic"
    params = write_params(tmp_path, data={"layout": "msrs", "root": str(out), "on_bad_input": "skip"})
    main(["prepare", "--synthetic", "--params", str(params), "--out", str(out)])
    Image.fromarray(np.zeros((41, 48), dtype=np.uint8)).save(out / "train" / "ir" / "day_0002.png")
    capsys.readouterr()
    assert main(["prepare", "--check", "--params", str(params)]) == 0
    printed = capsys.readouterr().out
    assert "train: 3 pairs" in printed and "skipped 1" in printed and "skipped day_0002:" in printed


def test_prepare_check_root_and_layout_options(tmp_path, capsys):
    pairs = tmp_path / "pairs"
    for folder in ("ir", "vi"):
        (pairs / folder).mkdir(parents=True)
        Image.fromarray(np.zeros((9, 11), dtype=np.uint8)).save(pairs / folder / "one.png")
    params = write_params(tmp_path)
    assert main(["prepare", "--check", "--params", str(params), "--root", str(pairs), "--layout", "pairs"]) == 0
    printed = capsys.readouterr().out
    assert "train: 1 pairs" in printed and "test: same folder as train" in printed


def test_prepare_check_missing_dataset_explains(tmp_path, capsys):
    params = write_params(tmp_path, data={"root": str(tmp_path / "nowhere")})
    assert main(["prepare", "--check", "--params", str(params)]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_prepare_without_a_flag_is_the_pipelines_prepare_step(tmp_path, capsys):
    """data.root at the project's synthetic folder (beside the params file): written there; else checked."""
    params = write_params(tmp_path)
    assert main(["prepare", "--params", str(params)]) == 0
    assert len(list((tmp_path / "data" / "synthetic" / "train" / "ir").glob("*.png"))) == 4
    shutil.copytree(tmp_path / "data" / "synthetic", tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["prepare", "--params", str(params), "--root", str(tmp_path / "elsewhere")]) == 0
    printed = capsys.readouterr().out
    assert "checking" in printed and "train: 4 pairs in" in printed and printed.rstrip().endswith("ok")
    with pytest.raises(SystemExit):
        main(["prepare", "--synthetic", "--check", "--params", str(params)])


def test_prepare_bad_params_is_a_config_error(tmp_path, capsys):
    params = write_params(tmp_path, synthetic={"height": 4})
    assert main(["prepare", "--synthetic", "--params", str(params), "--out", str(tmp_path / "x")]) == 2
    assert "synthetic.height" in capsys.readouterr().err


@pytest.mark.realdata
def test_prepare_check_on_real_msrs_boxes(tmp_path, capsys):
    root = SHARED_DATASETS / "msrs-boxes"
    if not root.is_dir():
        pytest.skip(f"real dataset {root} not present")
    params = write_params(tmp_path, data={"layout": "boxes", "root": str(root), "num_classes": 4,
                                          "class_names": ["background", "person", "bicycle", "car"]})
    assert main(["prepare", "--check", "--params", str(params)]) == 0
    printed = capsys.readouterr().out
    assert "train: 120 pairs" in printed and "test: 60 pairs" in printed
