"""Project paths: the root that a params file belongs to."""

from __future__ import annotations

from pathlib import Path

from uaafusion.paths import project_root_for


def test_preset_in_a_subfolder_belongs_to_the_project_holding_dvc_yaml(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params").mkdir()
    preset = tmp_path / "params" / "preset.yaml"
    preset.write_text("seed: 0\n")
    assert project_root_for(preset) == tmp_path.resolve()
    assert project_root_for(tmp_path / "params.yaml") == tmp_path.resolve()


def test_params_file_outside_any_project_is_its_own_root(tmp_path: Path) -> None:
    loose = tmp_path / "somewhere" / "params.yaml"
    loose.parent.mkdir()
    loose.write_text("seed: 0\n")
    assert project_root_for(loose) == loose.parent.resolve()
