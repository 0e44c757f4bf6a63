"""``uaafusion degrade``: degraded copies of image folders (names, formats, determinism, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.metrics.evaluation_fixtures import save_image, smooth_image
from uaafusion.cli import main
from uaafusion.data.degrade import DEGRADATIONS

HEIGHT, WIDTH = 40, 52
# name -> (infrared file, visible file): gray PNG / colour PNG, gray stored as RGB on both sides,
# gray JPEG / gray PNG (extensions differ across the pair and must be kept).
FILES = {"a": ("a.png", "a.png"), "b": ("b.png", "b.png"), "c": ("c.jpg", "c.png")}


def write_sources(root: Path) -> dict[str, Path]:
    """``root/ir`` and ``root/vi`` with the pairs of :data:`FILES`."""
    ir, vi = root / "ir", root / "vi"
    gray = {name: smooth_image(HEIGHT, WIDTH, seed) for seed, name in enumerate(("a", "b", "c", "d"))}
    save_image(ir / "a.png", gray["a"])
    save_image(vi / "a.png", np.stack([gray["b"], gray["c"], gray["d"]], axis=-1))  # colour
    save_image(ir / "b.png", np.repeat(gray["c"][..., None], 3, axis=2))  # gray stored as RGB
    save_image(vi / "b.png", np.repeat(gray["d"][..., None], 3, axis=2))
    save_image(ir / "c.jpg", gray["b"])
    save_image(vi / "c.png", gray["a"])
    return {"ir": ir, "vi": vi}


@pytest.fixture()
def sources(tmp_path: Path) -> dict[str, Path]:
    return write_sources(tmp_path / "src")


def degrade(sources: dict[str, Path], out: Path, *kinds: str, seed: int = 0, extra: tuple[str, ...] = ()) -> int:
    arguments = ["degrade", "--ir", str(sources["ir"]), "--vi", str(sources["vi"]), "--out", str(out),
                 "--severity", "0.6", "--seed", str(seed), *extra]
    for kind in kinds:
        arguments += ["--kind", kind]
    return main(arguments)


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_writes_same_names_and_degrades_only_the_kinds_source(sources, tmp_path, capsys):
    out = tmp_path / "stripes"
    assert degrade(sources, out, "ir_stripes") == 0
    assert "wrote 3 pairs" in capsys.readouterr().out
    assert sorted(path.name for path in out.iterdir()) == ["degradation.json", "ir", "vi"]
    for role in ("ir", "vi"):
        assert sorted(file_bytes(out / role)) == sorted(file_bytes(sources[role]))
    assert file_bytes(out / "vi") == file_bytes(sources["vi"])  # untouched: byte-identical copies
    for name, source in file_bytes(sources["ir"]).items():
        assert file_bytes(out / "ir")[name] != source, name
    with Image.open(out / "ir" / "c.jpg") as image:
        assert image.format == "JPEG" and image.size == (WIDTH, HEIGHT)

    out = tmp_path / "haze"
    assert degrade(sources, out, "haze") == 0
    assert file_bytes(out / "ir") == file_bytes(sources["ir"])
    for name, source in file_bytes(sources["vi"]).items():
        assert file_bytes(out / "vi")[name] != source, name

    out = tmp_path / "both"
    assert degrade(sources, out, "haze", "ir_noise") == 0
    for role in ("ir", "vi"):
        for name, source in file_bytes(sources[role]).items():
            assert file_bytes(out / role)[name] != source, (role, name)
    manifest = json.loads((out / "degradation.json").read_text())
    assert manifest["kinds"] == ["haze", "ir_noise"] and manifest["count"] == 3 and manifest["seed"] == 0


def test_same_arguments_give_the_same_bytes_and_another_seed_others(sources, tmp_path):
    runs = {}
    for label, seed in (("first", 3), ("again", 3), ("other", 4)):
        assert degrade(sources, tmp_path / label, "noise", "ir_noise", seed=seed) == 0
        runs[label] = {role: file_bytes(tmp_path / label / role) for role in ("ir", "vi")}
    assert runs["first"] == runs["again"]
    for role in ("ir", "vi"):
        for name in runs["first"][role]:
            assert runs["first"][role][name] != runs["other"][role][name], (role, name)


def test_image_modes_are_kept(sources, tmp_path):
    out = tmp_path / "out"
    assert degrade(sources, out, "noise", "ir_noise") == 0
    modes = {}
    for role in ("ir", "vi"):
        for path in sorted((out / role).iterdir()):
            with Image.open(path) as image:
                modes[f"{role}/{path.name}"] = image.mode
                array = np.asarray(image)
            if path.stem == "b":  # gray stored as RGB: still three equal channels
                assert array.shape == (HEIGHT, WIDTH, 3)
                assert np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])
            if role == "vi" and path.stem == "a":  # colour stays colour
                assert not np.array_equal(array[..., 0], array[..., 1])
    assert modes == {"ir/a.png": "L", "ir/b.png": "RGB", "ir/c.jpg": "L",
                     "vi/a.png": "RGB", "vi/b.png": "RGB", "vi/c.png": "L"}


def test_unknown_kind_and_bad_severity_are_refused(sources, tmp_path, capsys):
    out = tmp_path / "out"
    assert degrade(sources, out, "noise", "fog") == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and "'fog'" in error
    assert all(name in error for name in DEGRADATIONS)
    assert not out.exists()

    assert degrade(sources, out, "noise", extra=("--severity", "1.5")) == 2
    error = capsys.readouterr().err
    assert "--severity" in error and "[0, 1]" in error and "1.5" in error
    assert not out.exists()


@pytest.mark.parametrize(("role", "kind"), [("ir", "ir_noise"), ("vi", "ir_noise"), ("vi", "blur")])
def test_an_unreadable_image_stops_the_run_and_leaves_nothing(sources, tmp_path, capsys, role, kind):
    """Also when the bad file is on the side the kind does not touch (it would be copied otherwise)."""
    bad = sources[role] / "b.png"
    bad.write_bytes(b"not an image at all" * 10)
    out = tmp_path / "out"
    assert degrade(sources, out, kind) == 2
    assert str(bad) in capsys.readouterr().err
    assert not out.exists()
    assert [path.name for path in tmp_path.iterdir()] == ["src"]  # no OUT.partial-* left beside it


def test_a_pair_of_different_sizes_is_refused_even_when_one_side_is_copied(sources, tmp_path, capsys):
    save_image(sources["vi"] / "b.png", np.zeros((HEIGHT, WIDTH + 1), dtype=np.uint8))
    out = tmp_path / "out"
    assert degrade(sources, out, "ir_stripes") == 2
    error = capsys.readouterr().err
    assert "b.png" in error and "sizes differ" in error
    assert not out.exists()


def test_missing_partner_is_named(sources, tmp_path, capsys):
    (sources["vi"] / "c.png").unlink()
    out = tmp_path / "out"
    assert degrade(sources, out, "noise") == 2
    error = capsys.readouterr().err
    assert "no visible partner" in error and "c" in error
    assert not out.exists()


def test_existing_output_needs_overwrite(sources, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert degrade(sources, out, "noise") == 2
    assert "--out" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"

    assert degrade(sources, out, "noise", extra=("--overwrite",)) == 0
    assert sorted(path.name for path in out.iterdir()) == ["degradation.json", "ir", "vi"]


def test_list_prints_every_kind(capsys):
    assert main(["degrade", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(DEGRADATIONS)
    assert all(line.split()[1] in ("ir", "vi") for line in lines)


def test_missing_arguments_are_named(sources, capsys):
    assert main(["degrade", "--ir", str(sources["ir"]), "--vi", str(sources["vi"])]) == 2
    error = capsys.readouterr().err
    assert "--out" in error and "--kind" in error


def test_depth_maps_steer_haze_and_must_match_the_size(sources, tmp_path, capsys):
    depth = tmp_path / "depth"
    save_image(depth / "a.png", np.tile(np.linspace(0, 255, WIDTH).astype(np.uint8), (HEIGHT, 1)))
    assert degrade(sources, tmp_path / "plain", "haze") == 0
    assert degrade(sources, tmp_path / "deep", "haze", extra=("--depth", str(depth))) == 0
    plain, deep = file_bytes(tmp_path / "plain" / "vi"), file_bytes(tmp_path / "deep" / "vi")
    assert plain["a.png"] != deep["a.png"] and plain["b.png"] == deep["b.png"]  # b has no depth map

    save_image(depth / "b.png", np.zeros((HEIGHT - 1, WIDTH), dtype=np.uint8))
    assert degrade(sources, tmp_path / "bad", "haze", extra=("--depth", str(depth))) == 2
    assert str(depth / "b.png") in capsys.readouterr().err and not (tmp_path / "bad").exists()
