"""Training goes on when the MLflow server goes away.

:class:`JournaledTracker` is a :class:`PipelineTracker` whose calls, while the server does not answer,
are appended to a journal in the training run's folder (``mlflow-journal.jsonl``, one JSON event a
line) instead of failing the run. The first such call logs one warning. Every :data:`RETRY_SECONDS`
the tracker tries the server again; when it answers, the journal is sent in order (nested runs
created, metrics logged once per step, images, statuses, the model registered) and emptied.
``uaafusion sync-tracking RUN_FOLDER`` sends a journal left behind by a run that ended while the
server was still away.

A server that does not answer when training *starts* ends the run with its URI in the message, unless
``tracking.offline_ok`` is true: then the parent run itself is journaled (its id is :data:`PENDING_PARENT`
in the run folder's record and the pointer file until the server has it) and training goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uaafusion.tracking import RUN_RECORD_NAME, PipelineTracker, TrackingError

LOGGER = logging.getLogger(__name__)
JOURNAL_NAME = "mlflow-journal.jsonl"
RETRY_SECONDS = 30.0
PENDING = "pending:"  # the id of a nested run that could not be created yet: PENDING + its name
PENDING_PARENT = PENDING + "parent"  # the id of a parent run started while the server was away
_UNREACHABLE_MARKERS = ("Connection refused", "Failed to establish a new connection", "Max retries exceeded",
                        "Connection aborted", "Read timed out", "RemoteDisconnected")


def server_unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the tracking server did not answer."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (ConnectionError, TimeoutError)) or any(
                marker in str(seen) for marker in _UNREACHABLE_MARKERS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class JournaledTracker(PipelineTracker):
    """A tracker that journals what a missing server cannot take (see the module)."""

    journal_path: Path | None = None
    retry_seconds: float = RETRY_SECONDS
    _next_try: float = 0.0
    _warned: bool = False
    _real_ids: dict[str, str] | None = None  # pending id -> real id, once the server took them
    offline_ok: bool = False  # a server away when training starts: journal the parent run too

    # -- what the journal holds ---------------------------------------------------------------
    def _append(self, event: dict[str, Any]) -> None:
        if self.journal_path is None:
            raise TrackingError(f"MLflow server {self.uri} does not answer and no journal is configured.")
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal_path, "a") as handle:
            handle.write(json.dumps(event) + "\n")

    def pending_events(self) -> list[dict[str, Any]]:
        if self.journal_path is None or not self.journal_path.is_file():
            return []
        return [json.loads(line) for line in self.journal_path.read_text().splitlines() if line.strip()]

    def guarded(self, event: dict[str, Any], action: Callable[[], Any]) -> Any:
        """``action()`` when the server answers; else ``event`` goes to the journal and ``None`` is returned."""
        if self._away():
            self._append(event)
            return None
        try:
            return action()
        except Exception as error:
            if not server_unreachable(error):
                raise
            self._went_away(error)
            self._append(event)
            return None

    def _away(self) -> bool:
        """True while the journal has events that the server could not take yet (tried again, and the
        journal sent, every ``retry_seconds``)."""
        if not self.pending_events():
            return False
        if time.monotonic() < self._next_try:
            return True
        try:
            sent = self.flush()
        except Exception as error:
            if not server_unreachable(error):
                raise
            self._went_away(error)
            return True
        LOGGER.warning("MLflow server %s answers again: %d journaled event(s) sent.", self.uri, sent)
        return False

    def _went_away(self, error: BaseException) -> None:
        """Try the server again in ``retry_seconds``; warn when the outage starts (an empty journal: a
        later step of the same run, with events journaled already, stays quiet)."""
        self._next_try = time.monotonic() + self.retry_seconds
        if not self._warned and not self.pending_events():
            self._warned = True
            LOGGER.warning(
                "MLflow server %s does not answer (%s). Training goes on; what it would log is kept in %s and "
                "sent when the server answers again, or by `uaafusion sync-tracking %s`.",
                self.uri, type(error).__name__, self.journal_path,
                self.journal_path.parent if self.journal_path else "RUN_FOLDER")

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except Exception as error:
            # A step that starts while the server is away goes on when a journal and its run are known,
            # or, with offline_ok, when the journal will hold the run itself.
            if self.journal_path is None or not server_unreachable(error):
                raise
            if not (self.pointer_path.is_file() or self.offline_ok):
                raise TrackingError(f"{error} Or set tracking.offline_ok: true to train without it: the run is "
                                    "logged to its folder and sent when the server answers.") from error
            from mlflow import MlflowClient

            from uaafusion.tracking import RetryingClient

            self.client = RetryingClient(MlflowClient(tracking_uri=self.uri, registry_uri=self.uri))
            recorded = json.loads(self.pointer_path.read_text()) if self.pointer_path.is_file() else {}
            self.experiment_id = recorded.get("experiment_id")
            self._went_away(error)

    def start_parent(self, run_name: str, params: dict[str, Any], tags: dict[str, str] | None = None,
                     run_record: Path | None = None) -> str:
        """:meth:`PipelineTracker.start_parent`; with ``offline_ok`` and the server away, the parent is
        journaled: the run continues the parent its record names, else it is :data:`PENDING_PARENT`."""
        refusal = (f"MLflow server {self.uri} does not answer: start it, fix MLFLOW_TRACKING_URI, or set "
                   "tracking.offline_ok: true to train without it (logged to the run folder, sent later).")
        unreachable: Exception | None = None  # None: the server is known to be away (a journal waits)
        try:
            if not self._away():
                return super().start_parent(run_name, params, tags, run_record)
        except Exception as error:
            if not server_unreachable(error):
                raise
            unreachable = error
        if not (self.offline_ok and self.journal_path is not None):
            raise TrackingError(refusal) from unreachable
        if unreachable is not None:
            self._went_away(unreachable)
        recorded = json.loads(run_record.read_text()) if run_record is not None and run_record.is_file() else {}
        self.parent_run_id = recorded.get("parent_run_id") or PENDING_PARENT
        self._append({"kind": "parent", "run_name": run_name, "params": params, "tags": tags or {},
                      "run_record": str(run_record) if run_record is not None else None})
        self._write_records(run_record)
        return self.parent_run_id

    def _adopt_synced_parent(self) -> None:
        """A pointer still naming :data:`PENDING_PARENT` after ``uaafusion sync-tracking`` sent the run
        (which updates the run folder's record only) takes the record's real id."""
        pointer = json.loads(self.pointer_path.read_text())
        if pointer.get("parent_run_id") != PENDING_PARENT or not pointer.get("run_dir"):
            return
        record_path = Path(pointer["run_dir"]) / RUN_RECORD_NAME
        if record_path.is_file() and json.loads(record_path.read_text()).get("parent_run_id") != PENDING_PARENT:
            self.pointer_path.write_text(record_path.read_text())

    # -- the tracker's calls, guarded ---------------------------------------------------------------
    def attach_parent(self) -> str:
        if self.pointer_path.is_file():
            self._adopt_synced_parent()
            if self._away():  # the journal (maybe the parent run itself) waits for the server
                self.parent_run_id = json.loads(self.pointer_path.read_text())["parent_run_id"]
                return self.parent_run_id
        try:
            return super().attach_parent()
        except TrackingError as error:
            if not server_unreachable(error) or not self.pointer_path.is_file():
                raise
            self._went_away(error)
            self.parent_run_id = json.loads(self.pointer_path.read_text())["parent_run_id"]
            return self.parent_run_id

    def reopen_parent(self) -> None:
        self.guarded({"kind": "status", "status": "RUNNING"}, super().reopen_parent)

    def end_parent(self, status: str = "FINISHED") -> None:
        for name in list(self.nested_run_ids):
            self.close_nested(name, status)
        self.guarded({"kind": "status", "status": status},
                     lambda: self.client.set_terminated(self.parent_run_id, status))

    def nested(self, name: str, params: dict[str, Any] | None = None) -> str:
        if name in self.nested_run_ids:
            return self.nested_run_ids[name]
        run_id = self.guarded({"kind": "nested", "name": name, "params": params or {}},
                              lambda: super(JournaledTracker, self).nested(name, params))
        if run_id is None:
            self.nested_run_ids[name] = run_id = PENDING + name
        return run_id

    def close_nested(self, name: str, status: str = "FINISHED") -> None:
        run_id = self.nested_run_ids.pop(name, None)
        if run_id is not None:
            self.guarded({"kind": "close", "run": run_id, "status": status},
                         lambda: self._set_terminated(run_id, status))

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int, once: bool = False) -> None:
        self.guarded({"kind": "metrics", "run": run_id, "metrics": metrics, "step": step, "once": once},
                     lambda: self._log_metrics(run_id, metrics, step, once))

    def log_image_folder(self, run_id: str, folder: Path, step: int) -> bool:
        return bool(self.guarded({"kind": "images", "run": run_id, "folder": str(folder), "step": step},
                                 lambda: self._log_image_folder(run_id, folder, step)))

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.guarded({"kind": "artifact", "run": run_id, "path": str(path), "artifact_path": artifact_path},
                     lambda: PipelineTracker.log_artifact(self, run_id, path, artifact_path))

    def log_dataset(self, run_id: str, name: str, digest: str, source: str, profile: dict[str, Any],
                    context: str) -> None:
        self.guarded({"kind": "dataset", "run": run_id, "name": name, "digest": digest, "source": source,
                      "profile": profile, "context": context},
                     lambda: PipelineTracker.log_dataset(self, run_id, name, digest, source, profile, context))

    def log_dict(self, run_id: str, dictionary: dict[str, Any], artifact_file: str) -> None:
        self.guarded({"kind": "dict", "run": run_id, "dictionary": dictionary, "artifact_file": artifact_file},
                     lambda: PipelineTracker.log_dict(self, run_id, dictionary, artifact_file))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.guarded({"kind": "tag", "run": run_id, "key": key, "value": value},
                     lambda: PipelineTracker.set_tag(self, run_id, key, value))

    def register(self, checkpoint: Path, champion_metric: str, champion_goal: str) -> Any:
        """Register ``checkpoint`` (:func:`uaafusion.serving.register_model`), journaled when away."""
        return self.guarded({"kind": "register", "checkpoint": str(checkpoint), "metric": champion_metric,
                             "goal": champion_goal},
                            lambda: self._register(str(checkpoint), champion_metric, champion_goal))

    # -- sending the journal ------------------------------------------------------------------------
    def flush(self) -> int:
        """Send the journal's events in order and empty it; returns how many were sent. When the server
        fails half-way, what was sent leaves the journal (nothing is sent twice) and the error is raised."""
        events = self.pending_events()
        if not events:
            return 0
        names = self._real_ids = self._real_ids or {}  # pending id -> real id
        for index, event in enumerate(events):
            try:
                self._send(event)
            except BaseException:
                self.journal_path.write_text("".join(json.dumps(item) + "\n" for item in events[index:]))
                raise
        for name, run_id in list(self.nested_run_ids.items()):
            if run_id in names:  # open here under a pending id: the real one from now on
                self.nested_run_ids[name] = names[run_id]
        self.journal_path.unlink()
        return len(events)

    def _send(self, event: dict[str, Any]) -> None:
        """Send one journal event (pending ids become real ones through :meth:`_resolved`)."""
        kind, run = event["kind"], event.get("run")
        if kind == "parent":
            self._send_parent(event)
            return
        if kind == "nested":
            self._real_ids[PENDING + event["name"]] = self._create_nested(event["name"], event["params"])
            return
        if run is not None:
            run = self._resolved(run)
        if kind == "metrics":
            self._log_metrics(run, event["metrics"], event["step"], event["once"])
        elif kind == "close":
            self._set_terminated(run, event["status"])
        elif kind == "status":
            self.client.update_run(self.parent_run_id, status=event["status"])
        elif kind == "images":
            self._log_image_folder(run, Path(event["folder"]), event["step"])
        elif kind == "artifact":
            PipelineTracker.log_artifact(self, run, Path(event["path"]), event["artifact_path"])
        elif kind == "register":
            self._register(event["checkpoint"], event["metric"], event["goal"])
        elif kind == "dataset":
            PipelineTracker.log_dataset(self, run, event["name"], event["digest"], event["source"], event["profile"],
                                        event["context"])
        elif kind == "dict":
            PipelineTracker.log_dict(self, run, event["dictionary"], event["artifact_file"])
        elif kind == "tag":
            PipelineTracker.set_tag(self, run, event["key"], event["value"])
        else:
            raise TrackingError(f"{self.journal_path}: unknown journal event {event!r}.")

    def _send_parent(self, event: dict[str, Any]) -> None:
        """Start (or continue) the parent run journaled while the server was away; the run folder's record
        and the pointer file get its real id."""
        if self.experiment_id is None:
            self.experiment_id = self._experiment_id()
        run_record = Path(event["run_record"]) if event["run_record"] else None
        self.parent_run_id = PipelineTracker.start_parent(self, event["run_name"], event["params"], event["tags"],
                                                          run_record)
        self._real_ids[PENDING_PARENT] = self.parent_run_id

    def _create_nested(self, name: str, params: dict[str, Any]) -> str:
        """The real nested run ``name`` (found or created), whether or not it is open in this tracker."""
        open_here = self.nested_run_ids.pop(name, None)
        run_id = PipelineTracker.nested(self, name, params)
        if open_here is None:
            self.nested_run_ids.pop(name)
        return run_id

    def _resolved(self, run_id: str) -> str:
        """The real id of ``run_id``: itself, or for a pending id the nested run the server now has."""
        if not run_id.startswith(PENDING):
            return run_id
        self._real_ids = self._real_ids or {}
        if run_id == PENDING_PARENT:
            if self.parent_run_id.startswith(PENDING):
                raise TrackingError(f"{self.journal_path}: an event of the parent run comes before the run itself.")
            return self.parent_run_id
        if run_id not in self._real_ids:
            self._real_ids[run_id] = self._create_nested(run_id[len(PENDING):], {})
        return self._real_ids[run_id]

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int, once: bool) -> None:
        PipelineTracker.log_metrics(self, self._resolved(run_id), metrics, step, once)

    def _log_image_folder(self, run_id: str, folder: Path, step: int) -> bool:
        return PipelineTracker.log_image_folder(self, self._resolved(run_id), folder, step)

    def _set_terminated(self, run_id: str, status: str) -> None:
        self.client.set_terminated(self._resolved(run_id), status)

    def _register(self, checkpoint: str, metric: str, goal: str) -> Any:
        from uaafusion.config import TrackingConfig
        from uaafusion.serving import register_model

        return register_model(self, Path(checkpoint), TrackingConfig(champion_metric=metric, champion_goal=goal))


def tracker_for_run_folder(run_dir: Path) -> JournaledTracker:
    """The tracker of the training run in ``run_dir`` (its recorded store and parent run), with its journal."""
    record_path = Path(run_dir) / RUN_RECORD_NAME
    if not record_path.is_file():
        raise TrackingError(f"{run_dir}: no {RUN_RECORD_NAME}; this is not the folder of a tracked training run.")
    record = json.loads(record_path.read_text())
    tracker = JournaledTracker(project_root=Path(run_dir), pointer_path=record_path, uri=record["tracking_uri"],
                               journal_path=Path(run_dir) / JOURNAL_NAME)
    tracker.parent_run_id = record["parent_run_id"]
    return tracker
