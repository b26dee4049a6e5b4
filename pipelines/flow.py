"""A pipeline run: the engine's stages, then the release writer; as a Prefect flow or in-process.

With Prefect, every per-shard call of a stage is a task named `<stage>[<shard>]`, and a global stage's
decision is the barrier between its index and apply tasks. Without Prefect (`--no-prefect`) the very same
functions run in a loop, which is what the one-off commands and most unit tests use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.config import Pipeline
from pipelines.engine import MapFn, Outcome, execute, map_local
from pipelines.release import DEFAULT_ROOT, publish

# Prefect's own chatter is not the user's output, and nothing may call home.
PREFECT_DEFAULTS = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL"  # the temporary server logs shutdown races as errors,
}


def run_pipeline(pipeline: Pipeline, root: Path | None = None, use_prefect: bool = True) -> tuple[Path, Outcome]:
    """Run `pipeline` and publish its release; return the version folder and the outcome."""
    root = root or pipeline.release_dir or DEFAULT_ROOT
    if not use_prefect:
        return _run(pipeline, root, map_local)
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from prefect import flow

    run = flow(_run, name="sluice-run", flow_run_name=f"{pipeline.config.dataset}", validate_parameters=False)
    return run(pipeline, root, _prefect_map)


def _run(pipeline: Pipeline, root: Path, map_fn: MapFn) -> tuple[Path, Outcome]:
    outcome = execute(pipeline, map_fn)
    info: dict[str, Any] = {
        "config_path": str(pipeline.path),
        "config": pipeline.resolved,
        "config_hash": pipeline.config_hash,
        "fingerprints": {s.name: s.operator.fingerprint for s in pipeline.stages},
    }
    folder = publish(root, pipeline.config.dataset, outcome, info, pipeline.config.release.rows_per_file)
    return folder, outcome


def _prefect_map(fn: Callable, items: list, label: str, **kwargs: Any) -> list:
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    shard_task = task(fn, name=label, cache_policy=NO_CACHE)
    futures = [
        shard_task.with_options(task_run_name=f"{label}[{i}]").submit(item, **kwargs) for i, item in enumerate(items)
    ]
    return [f.result() for f in futures]
