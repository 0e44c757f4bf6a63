"""Crash detection for deployed flow runs: the Prefect automation that marks a flow run ``Crashed``
when its process died without a word (the worker's host or container killed, the OOM killer).

A flow run sends a heartbeat event every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (prefect.yaml
sets it for the deployment). This automation waits, after each heartbeat of a ``uaafusion-pipeline``
run, for the next heartbeat or a final state; none within ``--within`` seconds -> the run becomes
``Crashed``. Running the deployment again then resumes the training from its last checkpoint. Create
(or update) it once per Prefect server:

    python -m flows.automations [--within SECONDS]

See docs/deployment.md ("When a worker dies").
"""

from __future__ import annotations

import argparse
from datetime import timedelta

FLOW_NAME = "uaafusion-pipeline"
AUTOMATION_NAME = "uaafusion: crash flow runs that stopped sending heartbeats"
DEFAULT_WITHIN_SECONDS = 180  # three heartbeats of prefect.yaml's PREFECT_FLOWS_HEARTBEAT_FREQUENCY (60 s)
FINAL_EVENTS = ("prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed")
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"


def crash_detection(within_seconds: int = DEFAULT_WITHIN_SECONDS):
    """The automation (not yet created): a ``uaafusion-pipeline`` flow run without a heartbeat or a
    final state for ``within_seconds`` after a heartbeat is set ``Crashed``."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    if within_seconds < 1:
        raise ValueError(f"--within must be a positive number of seconds, got {within_seconds}")
    return Automation(
        name=AUTOMATION_NAME,
        description=f"No heartbeat from a {FLOW_NAME} flow run for {within_seconds} s: its process is gone.",
        trigger=EventTrigger(
            after={HEARTBEAT_EVENT},
            expect={HEARTBEAT_EVENT, *FINAL_EVENTS},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.role": "flow",
                                                 "prefect.resource.name": FLOW_NAME}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"No heartbeat for {within_seconds} s: the flow run's process is gone (worker or host "
                    "killed). Run the deployment again to resume from the last checkpoint.",
        )],
    )


def ensure_crash_detection(automation=None) -> str:
    """Create ``automation`` (default: :func:`crash_detection`'s) on the configured Prefect server,
    replacing one of the same name; returns its id."""
    from prefect.automations import Automation

    try:
        existing = Automation.read(name=AUTOMATION_NAME)
    except ValueError:  # none of that name
        existing = None
    if existing is not None:
        existing.delete()
    return str((automation or crash_detection()).create().id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.automations", description=__doc__.split("\n\n")[0])
    parser.add_argument("--within", type=int, default=DEFAULT_WITHIN_SECONDS,
                        help=f"seconds without a heartbeat before a run is Crashed (default {DEFAULT_WITHIN_SECONDS}; "
                             "more than the deployment's PREFECT_FLOWS_HEARTBEAT_FREQUENCY)")
    args = parser.parse_args(argv)
    try:
        automation = crash_detection(args.within)
    except ValueError as error:
        parser.error(str(error))
    automation_id = ensure_crash_detection(automation)
    print(f"automation '{AUTOMATION_NAME}' ({automation_id}): a {FLOW_NAME} flow run without a heartbeat "
          f"for {args.within} s is set Crashed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
