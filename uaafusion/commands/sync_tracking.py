"""``uaafusion sync-tracking RUN_FOLDER``: send to MLflow what a training run journaled while its tracking
server did not answer (``RUN_FOLDER/mlflow-journal.jsonl``; docs/tracking.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sync-tracking",
        help="send a training run's MLflow journal (kept while the tracking server was away)",
        description="Send the events a training run kept in RUN_FOLDER/mlflow-journal.jsonl while its MLflow "
                    "server did not answer (metrics, nested runs, images, statuses, the model registration) to "
                    "the server its run record names, in order, and empty the journal. A run whose server "
                    "comes back during training sends them itself.",
    )
    parser.add_argument("run_folder", type=Path, help="the training run's folder (checkpoints/<fingerprint>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uaafusion.tracking_journal import tracker_for_run_folder

    tracker = tracker_for_run_folder(args.run_folder)
    pending = len(tracker.pending_events())
    if not pending:
        print(f"{args.run_folder}: nothing to send.")
        return 0
    sent = tracker.flush()
    print(f"{args.run_folder}: sent {sent} journaled event(s) to {tracker.uri} (parent run {tracker.parent_run_id}).")
    return 0
