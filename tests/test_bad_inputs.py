"""Bad inputs at every door (issue #43, item 5): each bad input × each command it reaches (``prepare``,
``train``, ``fuse``, ``evaluate``, ``degrade``, ``compare``) and the pipeline flow's parameters.

A bad input must end the command with a non-zero exit code and ONE message (one line of stderr names the
offending file or key) that says what to do, with no traceback, and leave nothing half-written: what was
there before (inputs, earlier outputs) is unchanged, anything new is a whole file, no temporary file is
left. Some rows run the real command line in a subprocess. Odd but valid inputs must not become garbage:
a 16-bit infrared PNG reads as the 8-bit image it scales to (``v * 255 / 65535``), a palette PNG as class
indices (label) or its colours (image), a box across the border is clipped; every command gives the same
result for them as for their plain equivalents.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import write_tiny_params
from uaafusion.cli import main as cli_main
from uaafusion.data.io import read_image

HEIGHT, WIDTH = 24, 32
CLASS_NAMES = ["background", "person", "car"]
NAMES = ("a", "b")
GOOD_BOX = "0 0.5 0.5 0.25 0.5\n"
TRACEBACK = "Traceback (most recent call last)"
ADVICE = re.compile(r"\b(add|remove|replace|fix|check|set|use|pass|point|put|resize|align|register|re-run|run|"
                    r"write|choose|give|allowed|expected|must)\b", re.IGNORECASE)


# -- tiny data ------------------------------------------------------------------------------------

def pixels(seed: int, colour: bool = False, width: int = WIDTH) -> np.ndarray:
    shape = (HEIGHT, width, 3) if colour else (HEIGHT, width)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def save(path: Path, array: np.ndarray, palette: np.ndarray | None = None) -> Path:
    """``array`` as an image file; with ``palette`` (RGB rows), as a palette PNG of those indices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(array)
    if palette is not None:
        picture = Image.frombytes("P", picture.size, array.tobytes())
        picture.putpalette(palette.astype(np.uint8).ravel().tolist())
    picture.save(path)
    return path


def class_ids(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, len(CLASS_NAMES), size=(HEIGHT, WIDTH), dtype=np.uint8)


def write_dataset(ws: Path, layout: str) -> Path:
    """``ws/data/train/{ir,vi,Label|boxes}`` (two pairs) and fused images in ``ws/fused_in``; returns the split."""
    split = ws / "data" / "train"
    for index, name in enumerate(NAMES):
        save(split / "ir" / f"{name}.png", pixels(index))
        save(split / "vi" / f"{name}.png", pixels(10 + index, colour=True))
        save(ws / "fused_in" / f"{name}.png", pixels(20 + index))
        if layout == "msrs":
            save(split / "Label" / f"{name}.png", class_ids(index))
        else:
            (split / "boxes").mkdir(parents=True, exist_ok=True)
            (split / "boxes" / f"{name}.txt").write_text(GOOD_BOX)
            (split / "boxes" / "classes.txt").write_text("0 person\n1 car\n")  # beside the boxes: not a box file
    return split


def write_params(ws: Path, layout: str, **extra) -> Path:
    return write_tiny_params(ws / "params.yaml", **{
        "data.layout": layout, "data.root": str(ws / "data"), "data.train_split": "train",
        "data.test_split": "train", "data.num_classes": len(CLASS_NAMES), "data.class_names": CLASS_NAMES, **extra})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Images of 32x24 pixels gain nothing from threads, and lose much when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uaafusion.models import create_fusion_model, create_segmenter
    from uaafusion.models.checkpoint import save_models

    torch.manual_seed(0)
    segmenter = create_segmenter("Unet", "mobilenet_v2", num_classes=len(CLASS_NAMES), encoder_depth=3,
                                 decoder_channels=(16, 8, 4))
    fusion = create_fusion_model("uaafusion", stages=1, features=8, attribution_steps=2)
    return save_models(tmp_path_factory.mktemp("models") / "uaafusion.pt", fusion, segmenter,
                       extra={"class_names": CLASS_NAMES})


# -- the doors: the command line of each command over a workspace --------------------------------

def door_arguments(door: str, ws: Path, layout: str, checkpoint: Path, device: str = "cpu") -> list[str]:
    split = ws / "data" / "train"
    if door == "prepare":
        return ["prepare", "--check", "--params", str(ws / "params.yaml")]
    if door == "train":
        return ["train", "--params", "params.yaml", "--steps", "train"]
    if door == "fuse":
        return ["fuse", "--ir", str(split / "ir"), "--vi", str(split / "vi"), "--out", str(ws / "fused"),
                "--checkpoint", str(checkpoint), "--device", device]
    if door == "evaluate":
        labels = ["--labels", str(split / "Label")] if layout == "msrs" else ["--boxes", str(split / "boxes")]
        return ["evaluate", "--ir", str(split / "ir"), "--vi", str(split / "vi"), "--fused", str(ws / "fused_in"),
                *labels, "--segmenter", str(checkpoint), "--device", device, "--no-progress",
                "--out", str(ws / "evaluation.json")]
    if door == "degrade":
        return ["degrade", "--ir", str(split / "ir"), "--vi", str(split / "vi"), "--out", str(ws / "degraded"),
                "--kind", "haze", "--kind", "ir_noise", "--seed", "3", "--overwrite"]
    raise AssertionError(door)


def write_earlier_outputs(door: str, ws: Path, bad_pair: str | None) -> None:
    """Outputs of an earlier run, which a failed run must leave as they are."""
    if door == "fuse":
        save(ws / "fused" / f"{bad_pair or 'a'}.png", pixels(99))
    elif door == "degrade":
        save(ws / "degraded" / "ir" / "a.png", pixels(98))
    json_file = {"evaluate": "evaluation.json", "degrade": "degraded/degradation.json", "compare": "comparison.json"}
    if door in json_file:
        (ws / json_file[door]).write_text('{"earlier": true}\n')


def run_door(arguments: list[str], ws: Path, in_subprocess: bool, capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``uaafusion ARGUMENTS`` run in ``ws``."""
    if in_subprocess:
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-m", "uaafusion.cli", *arguments], cwd=ws, capture_output=True,
                                text=True, env=environment, timeout=300)
        return result.returncode, result.stdout, result.stderr
    monkeypatch.chdir(ws)
    capsys.readouterr()
    try:
        code = cli_main(arguments)
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 2
    return (code, *capsys.readouterr())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def assert_one_clean_message(code: int, out: str, err: str, offending: str) -> None:
    assert code != 0, f"exit code 0 for a bad input; stdout:\n{out}\nstderr:\n{err}"
    assert TRACEBACK not in err and TRACEBACK not in out, err
    naming = [line for line in err.splitlines() if offending in line]
    assert len(naming) == 1, f"expected one line of stderr naming {offending!r}, got {len(naming)}:\n{err}"
    assert ADVICE.search(err[err.index(naming[0]):]), f"the message does not say what to do:\n{err}"


def assert_nothing_half_written(before: dict[str, bytes], ws: Path, bad_output: str | None = None) -> None:
    after = snapshot(ws)
    changed = sorted(name for name, content in before.items() if after.get(name) != content)
    assert not changed, f"files there before were changed or removed: {changed}"
    leftovers = sorted(path.relative_to(ws).as_posix() for path in ws.rglob("*")
                       if path.name.endswith(".tmp") or ".partial" in path.name)
    assert not leftovers, f"temporary files left: {leftovers}"
    for name in sorted(set(after) - set(before)):
        assert name != bad_output, f"{name} was written for a bad input"
        if name.endswith(".png"):
            with Image.open(ws / name) as image:
                image.load()
        elif name.endswith(".json"):
            json.loads(after[name])


# -- the bad inputs -------------------------------------------------------------------------------

# Each damages a valid split folder and returns (what the message must name, the pair that is bad).
def missing_folder(split: Path) -> tuple[Path, str | None]:
    shutil.rmtree(split / "ir")
    return split / "ir", None


def empty_folder(split: Path) -> tuple[Path, str | None]:
    for path in (split / "ir").iterdir():
        path.unlink()
    return split / "ir", None


def file_without_partner(split: Path) -> tuple[Path, str | None]:
    return save(split / "ir" / "c.png", pixels(5)), "c"


def sizes_differ(split: Path) -> tuple[Path, str | None]:
    return save(split / "vi" / "a.png", pixels(6, colour=True, width=WIDTH + 1)), "a"


def truncated_png(split: Path) -> tuple[Path, str | None]:
    path = split / "ir" / "a.png"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path, "a"


def text_named_png(split: Path) -> tuple[Path, str | None]:
    path = split / "ir" / "a.png"
    path.write_text("this is a text file, not an image\n")
    return path, "a"


def floating_point_image(split: Path) -> tuple[Path, str | None]:
    """A float TIFF: its scale is unknown, so it must be refused, not guessed or clipped to black."""
    (split / "ir" / "a.png").unlink()
    path = split / "ir" / "a.tif"
    Image.fromarray(np.random.default_rng(4).random((HEIGHT, WIDTH), dtype=np.float32)).save(path)
    return path, "a"


def label_ids_out_of_range(split: Path) -> tuple[Path, str | None]:
    return save(split / "Label" / "a.png", np.full((HEIGHT, WIDTH), 7, dtype=np.uint8)), "a"


def box_outside_image(split: Path) -> tuple[Path, str | None]:
    path = split / "boxes" / "a.txt"
    path.write_text(GOOD_BOX + "1 1.3 0.5 0.2 0.2\n")
    return path, "a"


IMAGE_DOORS = ("prepare", "train", "fuse", "evaluate", "degrade")
LABEL_DOORS = ("prepare", "train", "evaluate")
DATA_CASES: dict[str, tuple[Callable[[Path], tuple[Path, str | None]], str, tuple[str, ...]]] = {
    # case: (damage, layout, doors it reaches)
    "missing-folder": (missing_folder, "msrs", IMAGE_DOORS),
    "empty-folder": (empty_folder, "msrs", IMAGE_DOORS),
    "file-without-partner": (file_without_partner, "msrs", IMAGE_DOORS),
    "sizes-differ": (sizes_differ, "msrs", IMAGE_DOORS),
    "truncated-png": (truncated_png, "msrs", IMAGE_DOORS),
    "text-named-png": (text_named_png, "msrs", IMAGE_DOORS),
    "floating-point-image": (floating_point_image, "msrs", IMAGE_DOORS),
    "label-ids-out-of-range": (label_ids_out_of_range, "msrs", LABEL_DOORS),
    "box-outside-image": (box_outside_image, "boxes", LABEL_DOORS),
}
# (door, case) rows that run the real command line in a subprocess (the rest run in-process).
IN_SUBPROCESS = {("prepare", "truncated-png"), ("train", "label-ids-out-of-range"), ("fuse", "sizes-differ"),
                 ("evaluate", "text-named-png"), ("degrade", "file-without-partner"), ("train", "params-key-typo"),
                 ("fuse", "device-does-not-exist"), ("compare", "not-json")}


def _rows(cases: dict) -> list:
    return [pytest.param(door, case, id=f"{door}-{case}{'-subprocess' if (door, case) in IN_SUBPROCESS else ''}")
            for case, entry in cases.items() for door in entry[-1]]


@pytest.mark.parametrize(("door", "case"), _rows(DATA_CASES))
def test_a_bad_input_file_or_folder_stops_the_command_with_one_message(
        door: str, case: str, tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    damage, layout, _ = DATA_CASES[case]
    ws = tmp_path.resolve()
    split = write_dataset(ws, layout)
    write_params(ws, layout)
    offending, bad_pair = damage(split)
    write_earlier_outputs(door, ws, bad_pair)
    before = snapshot(ws)

    code, out, err = run_door(door_arguments(door, ws, layout, checkpoint), ws, (door, case) in IN_SUBPROCESS,
                              capsys, monkeypatch)

    assert_one_clean_message(code, out, err, str(offending))
    assert_nothing_half_written(before, ws, bad_output=f"fused/{bad_pair}.png" if door == "fuse" else None)
    if door == "fuse" and bad_pair is not None:  # the pairs fail one by one
        assert (ws / "fused" / "b.png").is_file(), "the good pair is fused all the same"


# -- bad parameters -------------------------------------------------------------------------------

NO_DEVICE = "cuda:7"
CONFIG_CASES: dict[str, tuple[dict, str, tuple[str, ...]]] = {
    # case: (params changes, what the message must name, doors)
    "params-key-typo": ({"data.num_clases": 3}, "data.num_clases", ("prepare", "train")),
    "params-wrong-type": ({"train.rounds": "two"}, "train.rounds", ("prepare", "train")),
    "device-does-not-exist": ({"device": NO_DEVICE}, NO_DEVICE, ("train", "fuse", "evaluate")),
    "device-unknown-kind": ({"device": "tpu"}, "tpu", ("prepare", "train", "fuse", "evaluate")),
}


@pytest.mark.parametrize(("door", "case"), _rows(CONFIG_CASES))
def test_a_bad_parameter_stops_the_command_with_one_message_naming_it(
        door: str, case: str, tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    changes, offending, _ = CONFIG_CASES[case]
    if offending == NO_DEVICE and torch.cuda.device_count() > 7:
        pytest.skip(f"this machine has {NO_DEVICE}")
    ws = tmp_path.resolve()
    write_dataset(ws, "msrs")
    write_params(ws, "msrs", **changes)
    device = changes.get("device", "cpu")
    write_earlier_outputs(door, ws, None)
    before = snapshot(ws)

    code, out, err = run_door(door_arguments(door, ws, "msrs", checkpoint, device), ws,
                              (door, case) in IN_SUBPROCESS, capsys, monkeypatch)

    assert_one_clean_message(code, out, err, offending)
    assert_nothing_half_written(before, ws)


# -- compare: bad evaluation results ---------------------------------------------------------------

GOOD_RESULT = {"per_image": {"a": {"EN": 1.0}, "b": {"EN": 2.0}}, "mean": {"EN": 1.5}, "count": 2}
COMPARE_CASES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    # case: (file content, None = no file; doors)
    "missing-file": (None, ("compare",)),
    "empty-file": ("", ("compare",)),
    "not-json": ("EN 1.0\n", ("compare",)),
    "not-an-object": ("[1, 2]\n", ("compare",)),
    "not-an-evaluation": ('{"mean": {"EN": 1.0}}\n', ("compare",)),
}


@pytest.mark.parametrize(("door", "case"), _rows(COMPARE_CASES))
def test_a_bad_evaluation_result_stops_compare_with_one_message(
        door: str, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    content, _ = COMPARE_CASES[case]
    ws = tmp_path.resolve()
    (ws / "ours.json").write_text(json.dumps(GOOD_RESULT))
    bad = ws / "other.json"
    if content is not None:
        bad.write_text(content)
    write_earlier_outputs(door, ws, None)
    before = snapshot(ws)

    code, out, err = run_door(["compare", f"ours={ws / 'ours.json'}", str(bad), "--out", str(ws / "comparison.json")],
                              ws, (door, case) in IN_SUBPROCESS, capsys, monkeypatch)

    assert_one_clean_message(code, out, err, str(bad))
    assert_nothing_half_written(before, ws)


# -- the flow's parameters ---------------------------------------------------------------------------

FLOW_CASES: dict[str, tuple[dict, str]] = {
    # case: (flow parameters, what the message must name); "{ws}" is the project folder
    "params-file-missing": ({"params_file": "no-such-params.yaml"}, "no-such-params.yaml"),
    "rounds-wrong-type": ({"rounds": "two"}, "train.rounds"),
    "rounds-negative": ({"rounds": -1}, "train.rounds"),
    "dataset-root-missing": ({"dataset_root": "{ws}/nowhere"}, "{ws}/nowhere"),
    "dataset-root-empty": ({"dataset_root": "{ws}/empty"}, "{ws}/empty/train"),
    "dataset-root-bad-file": ({"dataset_root": "{ws}/bad/data"}, "{ws}/bad/data/train/ir/a.png"),
    "overrides-key-typo": ({"overrides": {"train.roundz": 1}}, "train.roundz"),
    "overrides-wrong-type": ({"overrides": {"data.batch_size": "four"}}, "data.batch_size"),
    "overrides-device-does-not-exist": ({"overrides": {"device": NO_DEVICE}}, NO_DEVICE),
    "overrides-device-unknown-kind": ({"overrides": {"device": "tpu"}}, "tpu"),
    "unknown-step": ({"steps": ["trian"]}, "trian"),
}


@pytest.mark.parametrize("case", list(FLOW_CASES))
def test_a_bad_flow_parameter_is_refused_before_any_work(case: str, tmp_path: Path) -> None:
    """What ``uaafusion train`` checks before it starts the Prefect flow, with the flow's parameters."""
    from uaafusion.errors import UAAFusionError
    from uaafusion.preflight import check_pipeline_run

    arguments, offending = FLOW_CASES[case]
    if offending == NO_DEVICE and torch.cuda.device_count() > 7:
        pytest.skip(f"this machine has {NO_DEVICE}")
    ws = tmp_path.resolve()
    write_dataset(ws, "msrs")
    write_params(ws, "msrs")
    (ws / "empty").mkdir()
    truncated_png(write_dataset(ws / "bad", "msrs"))
    arguments = {key: value.format(ws=ws) if isinstance(value, str) else value for key, value in arguments.items()}
    before = snapshot(ws)

    with pytest.raises(UAAFusionError) as raised:
        check_pipeline_run(ws, **{"steps": ["train"], **arguments})

    message = str(raised.value)
    assert offending.format(ws=ws) in message and ADVICE.search(message), message
    assert_nothing_half_written(before, ws)


def test_the_flow_parameters_of_a_good_run_pass_the_check(tmp_path: Path) -> None:
    from uaafusion.preflight import check_pipeline_run

    ws = tmp_path.resolve()
    write_dataset(ws / "other", "msrs")
    write_params(ws, "msrs")
    params = check_pipeline_run(ws, "params.yaml", ["prepare", "train"], {"train.fusion_epochs": 2}, rounds=3,
                                dataset_root=str(ws / "other" / "data"))
    assert (params.train.rounds, params.train.fusion_epochs) == (3, 2)
    assert params.data.root == str(ws / "other" / "data")


# -- odd but valid inputs: read as their plain 8-bit equivalents ------------------------------------

def sixteen_bit_infrared(split: Path, odd: bool) -> None:
    deep = np.random.default_rng(7).integers(0, 65536, size=(HEIGHT, WIDTH)).astype(np.uint16)
    save(split / "ir" / "a.png", deep if odd else np.round(deep * 255.0 / 65535.0).astype(np.uint8))


PALETTE = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250], [128, 128, 0]], dtype=np.uint8)  # not the ids


def palette_label(split: Path, odd: bool) -> None:
    save(split / "Label" / "a.png", class_ids(7), PALETTE if odd else None)


def palette_visible(split: Path, odd: bool) -> None:
    indices = np.random.default_rng(8).integers(0, len(PALETTE), size=(HEIGHT, WIDTH)).astype(np.uint8)
    save(split / "vi" / "a.png", indices if odd else PALETTE[indices], PALETTE if odd else None)


def box_across_border(split: Path, odd: bool) -> None:
    # x from 0.8 to 1.1 is clipped to the image: the box from 0.8 to 1.0.
    (split / "boxes" / "a.txt").write_text("0 0.95 0.5 0.3 0.5\n" if odd else "0 0.9 0.5 0.2 0.5\n")


VALID_CASES: dict[str, tuple[Callable[[Path, bool], None], str, tuple[str, ...]]] = {
    "16-bit-infrared": (sixteen_bit_infrared, "msrs", IMAGE_DOORS),
    "palette-label": (palette_label, "msrs", LABEL_DOORS),
    "palette-visible": (palette_visible, "msrs", IMAGE_DOORS),
    "box-across-border": (box_across_border, "boxes", LABEL_DOORS),
}


def door_result(door: str, ws: Path, layout: str, checkpoint: Path, capsys: pytest.CaptureFixture[str],
                monkeypatch: pytest.MonkeyPatch) -> object:
    """What ``door`` makes of the workspace: comparable between a workspace and its twin."""
    if door == "train":  # what training reads, after the checks `uaafusion train` makes (no Prefect run here)
        from uaafusion.data.datasets import create_dataset
        from uaafusion.preflight import check_pipeline_run

        params = check_pipeline_run(ws, "params.yaml", ["train"])
        dataset = create_dataset(params.data, "train", crop=False)
        return [{key: value.numpy() for key, value in dataset[index].items() if isinstance(value, torch.Tensor)}
                for index in range(len(dataset))]
    code, out, err = run_door(door_arguments(door, ws, layout, checkpoint), ws, False, capsys, monkeypatch)
    assert code == 0 and TRACEBACK not in err, err
    if door == "prepare":
        return out.replace(str(ws), "WS")
    if door == "evaluate":
        document = json.loads((ws / "evaluation.json").read_text())
        return {key: document[key] for key in ("per_image", "mean", "confusion")}
    folder = ws / ("fused" if door == "fuse" else "degraded")
    return {path.relative_to(folder).as_posix(): read_image(path) for path in sorted(folder.rglob("*.png"))}


@pytest.mark.parametrize(("door", "case"), _rows(VALID_CASES))
def test_an_odd_but_valid_input_is_read_as_its_plain_equivalent(
        door: str, case: str, tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_variant, layout, _ = VALID_CASES[case]
    results = {}
    for odd in (True, False):
        ws = (tmp_path / ("odd" if odd else "plain")).resolve()
        write_variant(write_dataset(ws, layout), odd)
        write_params(ws, layout)
        results[odd] = door_result(door, ws, layout, checkpoint, capsys, monkeypatch)
    np.testing.assert_equal(results[True], results[False])  # dicts and lists of arrays, item by item
    if door == "prepare":
        assert "skipped 0" in results[True] and results[True].rstrip().endswith("ok")


def test_a_16_bit_infrared_is_scaled_over_its_whole_range_and_a_palette_label_keeps_its_indices(
        tmp_path: Path) -> None:
    from uaafusion.data.io import array_to_tensor, read_label_image

    deep = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    eight_bit = read_image(save(tmp_path / "ir16.png", deep))
    np.testing.assert_array_equal(eight_bit, [[0, 1, 128, 255]])  # v * 255 / 65535, not v mod 256
    np.testing.assert_allclose(array_to_tensor(eight_bit)[0].numpy(), deep / 65535.0, atol=0.5 / 255)
    ids = np.array([[0, 1, 2, 3]], dtype=np.uint8)
    with Image.open(save(tmp_path / "label.png", ids, PALETTE)) as picture:
        assert picture.mode == "P"
    np.testing.assert_array_equal(read_label_image(tmp_path / "label.png"), ids)



def test_a_cuda_device_beyond_the_machines_is_named_with_the_ones_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other branch of the absent device (this machine may have no CUDA at all)."""
    from uaafusion.device import resolve_device
    from uaafusion.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"'cuda:7' does not exist: this machine has 2 CUDA device\(s\)\. "
                                          r"Use cuda:0 to cuda:1"):
        resolve_device("cuda:7")
