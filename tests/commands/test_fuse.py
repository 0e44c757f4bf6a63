"""``uaafusion fuse`` (pairs, folders, bad pairs, maps, model sources) and the colour handling it uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import uaafusion
from uaafusion.cli import main as cli_main
from uaafusion.data.io import read_image, rgb_to_ycrcb, write_png
from uaafusion.inference import blend_chroma, compose_colour, fuse_pair, load_models_for_inference

NUM_CLASSES = 3


def make_tiny_models(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A small Unet segmenter and a one-stage fusion network (seconds on a CPU)."""
    from uaafusion.models import create_fusion_model, create_segmenter

    torch.manual_seed(seed)
    segmenter = create_segmenter("Unet", "mobilenet_v2", num_classes=NUM_CLASSES, encoder_depth=3,
                                 decoder_channels=(16, 8, 4))
    fusion = create_fusion_model("uaafusion", stages=1, features=8, attribution_steps=2)
    return fusion, segmenter


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uaafusion.models.checkpoint import save_models

    fusion, segmenter = make_tiny_models()
    return save_models(tmp_path_factory.mktemp("models") / "uaafusion.pt", fusion, segmenter,
                       extra={"class_names": ["background", "road", "person"]})


def random_image(height: int, width: int, colour: bool, seed: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    shape = (height, width, 3) if colour else (height, width)
    return generator.integers(0, 256, size=shape, dtype=np.uint8)


# -- colour maths ---------------------------------------------------------------------------------

def test_blend_chroma_weights_each_source_by_its_distance_from_neutral() -> None:
    visible = torch.tensor([[[0.7]], [[0.5]]])   # |Cr-0.5| + |Cb-0.5| = 0.2
    infrared = torch.tensor([[[0.5]], [[0.1]]])  # strength 0.4
    blended = blend_chroma(visible, infrared)
    expected = (0.2 * visible + 0.4 * infrared) / 0.6
    assert torch.allclose(blended, expected)
    assert blended.shape == (2, 1, 1)


def test_blend_chroma_neutral_gray_and_missing_sources() -> None:
    neutral = torch.full((2, 3, 4), 0.5)
    assert torch.equal(blend_chroma(neutral, neutral.clone()), neutral)
    visible = torch.rand(2, 3, 4)
    assert blend_chroma(visible, None) is visible
    assert blend_chroma(None, visible) is visible
    assert blend_chroma(None, None) is None
    # A neutral infrared chroma leaves the visible chroma as it is.
    assert torch.allclose(blend_chroma(visible, neutral), visible)


def test_compose_colour_round_trips_and_gray_stays_single_channel() -> None:
    rgb = torch.rand(3, 5, 7)
    ycrcb = rgb_to_ycrcb(rgb)
    assert torch.allclose(compose_colour(ycrcb[:1], ycrcb[1:]), rgb, atol=2e-3)
    luma = torch.rand(1, 5, 7) * 1.2
    gray = compose_colour(luma, None)
    assert gray.shape == (1, 5, 7) and float(gray.max()) <= 1.0


# -- Python API ----------------------------------------------------------------------------------

def test_python_fuse_api_keeps_size_and_colour(checkpoint: Path) -> None:
    loaded = load_models_for_inference(checkpoint, "cpu")
    ir = random_image(45, 61, colour=False, seed=1)
    vi = random_image(45, 61, colour=True, seed=2)
    fused = uaafusion.fuse(ir, vi, loaded.fusion, loaded.segmenter)
    assert fused.dtype == np.uint8 and fused.shape == (45, 61, 3)
    gray = uaafusion.fuse(torch.from_numpy(ir).float()[None] / 255, torch.from_numpy(vi[..., 0]).float()[None] / 255,
                          loaded.fusion, loaded.segmenter)
    assert gray.shape == (45, 61)
    with pytest.raises(ValueError, match="sizes differ"):
        uaafusion.fuse(ir, vi[:-1], loaded.fusion, loaded.segmenter)


def test_fuse_pair_returns_maps_and_segmentation(checkpoint: Path) -> None:
    loaded = load_models_for_inference(checkpoint, "cpu")
    result = fuse_pair(random_image(33, 40, False, 3), random_image(33, 40, False, 4),
                       loaded.fusion, loaded.segmenter, segment=True)
    assert result.image.shape == (33, 40)
    for tensor in (result.fused_luma, result.weight_ir, result.weight_vi, result.attention):
        assert tensor.shape == (1, 33, 40)
    assert torch.allclose(result.weight_ir + result.weight_vi, torch.ones(1, 33, 40), atol=1e-5)
    assert result.segmentation.shape == (33, 40)
    assert int(result.segmentation.max()) < NUM_CLASSES


# -- CLI ------------------------------------------------------------------------------------------

def test_fuse_cli_pair_colour_visible_with_maps(tmp_path: Path, checkpoint: Path) -> None:
    ir_path = write_png(tmp_path / "in" / "ir.png", random_image(45, 61, colour=False, seed=5))
    vi_path = write_png(tmp_path / "in" / "vi.jpg.png", random_image(45, 61, colour=True, seed=6))
    out = tmp_path / "out" / "fused.png"
    code = cli_main(["fuse", "--ir", str(ir_path), "--vi", str(vi_path), "--out", str(out),
                     "--checkpoint", str(checkpoint), "--device", "cpu", "--save-maps"])
    assert code == 0
    fused = read_image(out)
    assert fused.shape == (45, 61, 3)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.mode == "RGB"
    for suffix in ("weight_ir", "weight_vi", "attention", "segmentation"):
        map_path = out.parent / f"fused_{suffix}.png"
        assert map_path.is_file(), suffix
        assert read_image(map_path).shape == (45, 61, 3)


def test_fuse_cli_folders_report_bad_pairs_and_fuse_the_rest(tmp_path: Path, checkpoint: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    ir_dir, vi_dir, out_dir = tmp_path / "ir", tmp_path / "vi", tmp_path / "fused"
    # good: gray+gray (odd size), gray+colour, colour+colour
    write_png(ir_dir / "a_gray.png", random_image(45, 61, False, 10))
    write_png(vi_dir / "a_gray.png", random_image(45, 61, False, 11))
    write_png(ir_dir / "b_colour.png", random_image(37, 50, False, 12))
    Image.fromarray(random_image(37, 50, True, 13)).save(vi_dir / "b_colour.jpg", quality=95)
    write_png(ir_dir / "c_both.png", random_image(32, 33, True, 14))
    write_png(vi_dir / "c_both.png", random_image(32, 33, True, 15))
    # bad: size mismatch, missing partner, unreadable file
    write_png(ir_dir / "d_size.png", random_image(40, 40, False, 16))
    write_png(vi_dir / "d_size.png", random_image(41, 40, False, 17))
    write_png(ir_dir / "e_alone.png", random_image(32, 32, False, 18))
    write_png(ir_dir / "f_broken.png", random_image(32, 32, False, 19))
    (vi_dir / "f_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")

    code = cli_main(["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "--out", str(out_dir),
                     "--checkpoint", str(checkpoint), "--device", "cpu", "--save-maps"])
    captured = capsys.readouterr()
    assert code == 1
    assert read_image(out_dir / "a_gray.png").shape == (45, 61)
    assert read_image(out_dir / "b_colour.png").shape == (37, 50, 3)
    assert read_image(out_dir / "c_both.png").shape == (32, 33, 3)
    for name in ("d_size", "e_alone", "f_broken"):
        assert not (out_dir / f"{name}.png").exists()
    errors = captured.err
    assert "3 pair(s) failed" in errors
    assert "d_size.png" in errors and "same height and width" in errors
    assert "e_alone" in errors and "no visible partner" in errors
    assert "f_broken.png" in errors and "cannot be read" in errors
    assert "fused 3 of 6 pair(s)" in captured.out
    for name in ("a_gray", "b_colour", "c_both"):
        for suffix in ("weight_ir", "weight_vi", "attention", "segmentation"):
            assert (out_dir / "maps" / f"{name}_{suffix}.png").is_file()


def test_fuse_cli_default_checkpoint_missing_is_a_clear_error(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    ir_path = write_png(tmp_path / "ir.png", random_image(16, 16, False, 20))
    vi_path = write_png(tmp_path / "vi.png", random_image(16, 16, False, 21))
    code = cli_main(["fuse", "--ir", str(ir_path), "--vi", str(vi_path), "--out", str(tmp_path / "o.png"),
                     "--project-root", str(tmp_path), "--device", "cpu"])
    assert code == 2
    assert "models/uaafusion.pt" in capsys.readouterr().err


def test_fuse_cli_rejects_a_file_and_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ir_path = write_png(tmp_path / "ir.png", random_image(16, 16, False, 22))
    code = cli_main(["fuse", "--ir", str(ir_path), "--vi", str(tmp_path), "--out", str(tmp_path / "o.png")])
    assert code == 2
    assert "two image files or two folders" in capsys.readouterr().err


def test_fuse_cli_loads_the_registered_champion(tmp_path: Path, checkpoint: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model models:/uaafusion@champion`` and ``--run RUN_ID`` fetch the checkpoint from MLflow."""
    pytest.importorskip("mlflow")
    from uaafusion.config import TrackingConfig
    from uaafusion.serving import register_model
    from uaafusion.tracking import PipelineTracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = PipelineTracker(project_root=tmp_path, pointer_path=tmp_path / "models" / "mlflow-run.json")
    run_id = tracker.start_parent("test", {"seed": 0})
    register_model(tracker, checkpoint, TrackingConfig())
    tracker.end_parent()
    ir_path = write_png(tmp_path / "ir.png", random_image(24, 27, False, 23))
    vi_path = write_png(tmp_path / "vi.png", random_image(24, 27, True, 24))
    for source in (["--model", "models:/uaafusion@champion"], ["--run", run_id]):
        out = tmp_path / f"fused_{source[0].strip('-')}.png"
        code = cli_main(["fuse", "--ir", str(ir_path), "--vi", str(vi_path), "--out", str(out),
                         "--project-root", str(tmp_path), "--device", "cpu", *source])
        assert code == 0
        assert read_image(out).shape == (24, 27, 3)


def test_parse_model_uri_forms() -> None:
    from uaafusion.inference import parse_model_uri
    from uaafusion.tracking import TrackingError

    assert parse_model_uri("models:/uaafusion@champion") == ("uaafusion", "champion", True)
    assert parse_model_uri("models:/uaafusion/3") == ("uaafusion", "3", False)
    assert parse_model_uri("models:/uaafusion/latest") == ("uaafusion", "latest", False)
    for bad in ("uaafusion@champion", "models:/", "models:/name/x/y", "models:/name/abc"):
        with pytest.raises(TrackingError, match="models:/NAME@ALIAS"):
            parse_model_uri(bad)
