"""Dask preload for the processes of a cluster that runs Sluice: `dask scheduler --preload pipelines.preload` and
`dask worker --preload pipelines.preload`. At its start the process imports Sluice's task code (the scheduler
unpickles every task graph it is sent; a worker runs the tasks) and a worker set up for S3 builds its S3 client:
~1.5-2.5 CPU s each that a cluster serving many runs then pays once, not in every run's first seconds (where
they compete with the driver for the start of Prefect's API). Without it, each run has the processes do the
same when it connects (executors.warm_up)."""

from __future__ import annotations

from typing import Any


def dask_setup(server: Any) -> None:
    from pipelines.executors import warm_process

    warm_process(client=type(server).__name__ == "Worker")
