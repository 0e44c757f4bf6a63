"""``uaafusion sync-tracking``: a folder that is not a tracked run is named; a run without a journal has
nothing to send (sending a journal to a server that came back: tests/flows/test_tracking_server_away.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from uaafusion.cli import main as cli_main
from uaafusion.tracking import RUN_RECORD_NAME, PipelineTracker


def test_a_folder_without_a_run_record_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["sync-tracking", str(tmp_path)]) == 2
    assert f"{tmp_path}: no {RUN_RECORD_NAME}" in capsys.readouterr().err


def test_a_run_without_a_journal_has_nothing_to_send(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "checkpoints" / "abc"
    PipelineTracker(project_root=tmp_path, pointer_path=tmp_path / "models" / "mlflow-run.json").start_parent(
        "run", {}, run_record=run_dir / RUN_RECORD_NAME)
    assert cli_main(["sync-tracking", str(run_dir)]) == 0
    assert "nothing to send" in capsys.readouterr().out
