"""Files the pipeline writes for itself: whole or absent, checked when read, the previous one kept."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from uaafusion.integrity import (
    DamagedFileError,
    digest_path,
    load_verified,
    previous_path,
    save_verified,
    tensors_sha256,
)


def test_a_saved_file_loads_with_its_digest_and_keeps_the_one_before(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    save_verified({"step": 1, "weight": torch.ones(3)}, path, keep_previous=True)
    save_verified({"step": 2, "weight": torch.zeros(3)}, path, keep_previous=True)
    assert load_verified(path)["step"] == 2
    assert load_verified(previous_path(path))["step"] == 1
    assert sorted(item.name for item in tmp_path.iterdir()) == [
        "state.previous.pt", "state.previous.pt.sha256", "state.pt", "state.pt.sha256"]


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]), "truncated or changed"),
    (lambda path: path.write_bytes(path.read_bytes()[:-40] + b"x" + path.read_bytes()[-39:]), "truncated or changed"),
    (lambda path: digest_path(path).unlink(), "no digest beside it"),
])
def test_a_damaged_file_is_refused_and_named(tmp_path: Path, damage, message: str) -> None:
    path = save_verified({"weight": torch.arange(1000.0)}, tmp_path / "cache.pt")
    damage(path)
    with pytest.raises(DamagedFileError, match=rf"{path}: .*{message}"):
        load_verified(path)


def test_a_full_disk_while_saving_leaves_the_previous_files_as_they_were(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_verified({"step": 1}, tmp_path / "state.pt", keep_previous=True)
    before = {item.name: item.read_bytes() for item in tmp_path.iterdir()}

    def full_disk(payload, stream) -> None:
        stream.write(b"half of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_verified({"step": 2}, path, keep_previous=True)
    assert {item.name: item.read_bytes() for item in tmp_path.iterdir()} == before  # no temporary file left
    monkeypatch.undo()
    assert load_verified(path)["step"] == 1


def test_the_weights_digest_follows_every_value() -> None:
    weights = {"a": torch.ones(2, 2), "b": torch.tensor(3)}
    assert tensors_sha256(weights, {"x": 1}) == tensors_sha256({"b": torch.tensor(3), "a": torch.ones(2, 2)}, {"x": 1})
    assert tensors_sha256(weights, {"x": 1}) != tensors_sha256({**weights, "b": torch.tensor(4)}, {"x": 1})
    assert tensors_sha256(weights, {"x": 1}) != tensors_sha256(weights, {"x": 2})
    assert tensors_sha256(weights) != tensors_sha256({**weights, "a": torch.ones(2, 2, dtype=torch.float64)})


def test_an_image_that_fails_half_way_leaves_the_old_one_and_a_rerun_replaces_a_killed_writers_leftover(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from PIL import Image

    from uaafusion.data.io import read_image, write_png

    path = write_png(tmp_path / "fused" / "day_0001.png", np.full((4, 6), 7, np.uint8))
    original = Image.Image.save

    def failing_save(self, stream, *args, **kwargs) -> None:
        stream.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError):
        write_png(path, np.full((4, 6), 9, np.uint8))
    monkeypatch.setattr(Image.Image, "save", original)
    assert int(read_image(path).max()) == 7 and sorted(item.name for item in path.parent.iterdir()) == [path.name]
    (path.parent / f".{path.name}.tmp").write_bytes(b"left by a process killed while writing")
    write_png(path, np.full((4, 6), 9, np.uint8))
    assert int(read_image(path).max()) == 9 and sorted(item.name for item in path.parent.iterdir()) == [path.name]
