"""``uaafusion.Fuser``: loading, modes, arrays in and uint8 out, folders with prefetching and failures."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import uaafusion
import uaafusion.fuser as fuser_module
from tests.commands.test_fuse import make_tiny_models, random_image
from uaafusion.data.io import read_image, write_png
from uaafusion.errors import ConfigError
from uaafusion.fuser import Fuser
from uaafusion.inference import fuse, load_models_for_inference
from uaafusion.models.checkpoint import save_models


@pytest.fixture(scope="module")
def two_stage_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uaafusion.models import create_fusion_model

    _, segmenter = make_tiny_models()
    torch.manual_seed(1)
    fusion = create_fusion_model("uaafusion", stages=2, features=8, attribution_steps=2)
    return save_models(tmp_path_factory.mktemp("models") / "uaafusion.pt", fusion, segmenter)


def test_fuser_is_exported_and_fuses_arrays_to_uint8(two_stage_checkpoint: Path) -> None:
    assert uaafusion.Fuser is Fuser
    fuser = Fuser.from_checkpoint(two_stage_checkpoint, device="cpu", mode="exact")
    ir, vi = random_image(33, 47, False, 1), random_image(33, 47, True, 2)
    fused = fuser.fuse(ir, vi)
    assert fused.dtype == np.uint8 and fused.shape == (33, 47, 3)
    loaded = load_models_for_inference(two_stage_checkpoint, "cpu")
    loaded.fusion.inference_mode = "exact"
    np.testing.assert_array_equal(fused, fuse(ir, vi, loaded.fusion, loaded.segmenter))


def test_mode_defaults_to_the_checkpoint_and_can_be_chosen(two_stage_checkpoint: Path) -> None:
    assert Fuser.from_checkpoint(two_stage_checkpoint, device="cpu").mode == "fast"
    exact = Fuser.from_checkpoint(two_stage_checkpoint, device="cpu", mode="exact")
    fast = Fuser.from_checkpoint(two_stage_checkpoint, device="cpu", mode="fast")
    assert exact.fusion.inference_mode == "exact" and fast.fusion.inference_mode == "fast"
    ir, vi = random_image(40, 40, False, 3), random_image(40, 40, False, 4)
    exact_attention, fast_attention = (fuser.fuse_pair(ir, vi).attention for fuser in (exact, fast))
    assert not torch.equal(exact_attention, fast_attention)  # the second stage's attention differs
    with pytest.raises(ConfigError, match="mode = 'quick'.*fast, exact"):
        Fuser.from_checkpoint(two_stage_checkpoint, device="cpu", mode="quick")
    with pytest.raises(ConfigError, match="tile_size"):
        Fuser.from_checkpoint(two_stage_checkpoint, device="cpu", tile_size=10)
    with pytest.raises(ConfigError, match="overlap = 0"):
        Fuser.from_checkpoint(two_stage_checkpoint, device="cpu", tile_size=256, overlap=0)


def test_loading_applies_the_allocator_setting_and_bounds_the_attribution_batch(
        two_stage_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uaafusion.allocator as allocator

    calls: list[int] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    fuser = Fuser.from_checkpoint(two_stage_checkpoint, device="cpu")
    assert calls == [1]
    assert fuser.fusion.internal_batch_size == fuser_module.INFERENCE_INTERNAL_BATCH_SIZE


def test_fuse_folder_prefetches_the_next_pairs_and_records_failures(two_stage_checkpoint: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ir_dir, vi_dir, out_dir = tmp_path / "ir", tmp_path / "vi", tmp_path / "out"
    for index in range(4):
        write_png(ir_dir / f"p{index}.png", random_image(24, 30, False, 10 + index))
        write_png(vi_dir / f"p{index}.png", random_image(24, 30, True, 20 + index))
    write_png(ir_dir / "q_size.png", random_image(24, 30, False, 5))
    write_png(vi_dir / "q_size.png", random_image(25, 30, False, 6))
    write_png(ir_dir / "r_alone.png", random_image(24, 30, False, 7))
    events: list[str] = []
    reader_threads: set[str] = set()
    original_read, original_fuse = fuser_module.read_pair, Fuser.fuse_pair

    second_pair_read = threading.Event()

    def recording_read(job):
        reader_threads.add(threading.current_thread().name)
        events.append(f"read {job.name}")
        if job.name == "p1":
            second_pair_read.set()
        return original_read(job)

    def recording_fuse(self, ir, vi, segment=False):
        # With prefetching the reader takes the second pair while the first is fused; give a busy
        # machine's scheduler time to show it (without prefetching, nothing reads it in the meantime).
        second_pair_read.wait(timeout=10)
        events.append("fuse start")
        return original_fuse(self, ir, vi, segment)

    monkeypatch.setattr(fuser_module, "read_pair", recording_read)
    monkeypatch.setattr(Fuser, "fuse_pair", recording_fuse)
    fuser = Fuser.from_checkpoint(two_stage_checkpoint, device="cpu")
    result = fuser.fuse_folder(ir_dir, vi_dir, out_dir, progress=False)

    assert [path.name for path in result.written] == [f"p{index}.png" for index in range(4)]
    assert all(read_image(path).shape == (24, 30, 3) for path in result.written)
    assert {failure.name for failure in result.failures} == {"q_size", "r_alone"}
    messages = " ".join(failure.message for failure in result.failures)
    assert "q_size.png" in messages and "same height and width" in messages and "no visible partner" in messages
    assert not (out_dir / "q_size.png").exists()
    assert all(name.startswith("uaafusion-reader") for name in reader_threads)
    # The second pair was being decoded before the first one was fused.
    assert events.index("read p1") < events.index("fuse start")


def test_fuse_cli_takes_the_mode_and_tile_size(tmp_path: Path, two_stage_checkpoint: Path) -> None:
    from uaafusion.cli import main as cli_main

    ir_path = write_png(tmp_path / "ir.png", random_image(150, 170, False, 8))
    vi_path = write_png(tmp_path / "vi.png", random_image(150, 170, False, 9))
    outputs = {}
    for name, options in {"exact": ["--mode", "exact", "--tile-size", "0"],
                          "tiled": ["--mode", "exact", "--tile-size", "100"]}.items():
        outputs[name] = tmp_path / f"{name}.png"
        code = cli_main(["fuse", "--ir", str(ir_path), "--vi", str(vi_path), "--out", str(outputs[name]),
                         "--checkpoint", str(two_stage_checkpoint), "--device", "cpu", *options])
        assert code == 0
    exact, tiled = (read_image(outputs[name]).astype(float) for name in ("exact", "tiled"))
    assert exact.shape == tiled.shape == (150, 170)
    assert np.abs(exact - tiled).mean() < 2.0
    with pytest.raises(SystemExit):
        cli_main(["fuse", "--ir", str(ir_path), "--vi", str(vi_path), "--out", str(tmp_path / "x.png"),
                  "--mode", "quick"])
