"""`sluice` with a timestamp line per driver phase (profiling only; bench/cluster/timeline.py runs it).

    TIMELINE=out.txt T0=<time.time() at launch> python bench/cluster/timed_sluice.py run CONFIG [sluice options]

Each line: seconds since T0, this process's CPU seconds, thread, `> phase` / `< phase` (the driver's own functions
wrapped: Prefect's server start and wait, the Dask session, each stage, each map, the release's steps), and the
Prefect server's CPU seconds when it answers and when it is stopped.
"""

import atexit
import functools
import os
import sys
import threading
import time
from contextlib import contextmanager

T0 = float(os.environ.get("T0", time.time()))
OUT = open(os.environ["TIMELINE"], "a", buffering=1)


def log(what: str) -> None:
    OUT.write(f"{time.time() - T0:8.3f} {time.process_time():7.2f} {threading.current_thread().name[:12]:12} {what}\n")


def wrap(owner, name: str, label: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        log(f"> {label}")
        try:
            return fn(*args, **kwargs)
        finally:
            log(f"< {label}")

    setattr(owner, name, timed)


def server_cpu(server) -> float:
    fields = open(f"/proc/{server.process.pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


log("python up")
atexit.register(lambda: log("last exit hook"))  # registered first: runs last
from pipelines import cache, cli, engine, executors, flow, release, storage  # noqa: E402

log("imported")
for name in ("start_api_server", "use_api_server", "next_version", "execute", "publish", "_publish_artifact",
             "_run_locked", "run_pipeline"):
    wrap(flow, name, f"flow.{name}")
for name in ("_claim", "unified_schema", "_write_parts", "dataset_card", "render_report", "_seal"):
    wrap(release, name, f"release.{name}")
wrap(storage, "commit_folder", "storage.commit_folder")
from pipelines import config  # noqa: E402

wrap(config, "load", "config.load")
for name in ("read_inputs", "run_stage", "run_fused", "decide"):
    wrap(engine, name, f"engine.{name}")
_prefect_map = executors.prefect_map


def prefect_map(fn, jobs, label, *args, call=None, **kwargs):
    """The map, and when each of its task bodies starts and ends in this process (Prefect's view)."""
    inner = call or engine.call_cached

    def timed_call(fn_, job, cache, **kw):
        log(f"  task body {label}[{job.name}] starts")
        try:
            return inner(fn_, job, cache, **kw)
        finally:
            log(f"  task body {label}[{job.name}] ends")

    log(f"> map {label} ({len(jobs)} jobs)")
    try:
        return _prefect_map(fn, jobs, label, *args, call=timed_call, **kwargs)
    finally:
        log(f"< map {label}")


executors.prefect_map = prefect_map
_dask_map = executors.PrefectDask.map


def dask_map(self, fn, jobs, label, *args, **kwargs):
    log(f"> dask map {label}")  # then its parameters' size check and scatter, then prefect_map's "> map"
    return _dask_map(self, fn, jobs, label, *args, **kwargs)


executors.PrefectDask.map = dask_map
wrap(cache.ShardCache, "drop_spills", "cache.drop_spills")
_wait, _stop = flow.ApiServer.wait, flow.ApiServer.stop
flow.ApiServer.wait = lambda self, timeout: (_wait(self, timeout), log(f"server answers, its CPU {server_cpu(self):.2f} s"))
flow.ApiServer.stop = lambda self: (self.alive() and log(f"server stop, its CPU {server_cpu(self):.2f} s"), _stop(self))
_session = executors.PrefectDask.session


@contextmanager
def session(self, inputs=()):
    log("> dask.session")
    with _session(self, inputs):
        log("= dask.session entered")
        from distributed import get_task_stream

        with get_task_stream(self.client) as stream:
            yield
        log("> dask.session exit")
        _transitions(self.client)
        for task in sorted(stream.data, key=lambda t: t["startstops"][0]["start"]):
            spans = " ".join(f"{s['action']} {s['start'] - T0:.3f}-{s['stop'] - T0:.3f}" for s in task["startstops"])
            OUT.write(f"  worker {task['worker'][-6:]} {task['key']}: {spans}\n")
    log("< dask.session")


def _transitions(client) -> None:
    """The scheduler's and the workers' state transitions of each map's first tasks, seconds since T0."""
    def scheduler_log(dask_scheduler):
        return [(str(e[0]), e[1], e[2], e[-1]) for e in dask_scheduler.transition_log if len(e) == 6]

    def worker_log(dask_worker):
        return [(str(e[0]), str(e[1]), str(e[2]), e[-1]) for e in dask_worker.state.log
                if len(e) >= 4 and isinstance(e[-1], float) and "[" in str(e[0])]

    seen: dict[str, int] = {}
    events = [("scheduler", *e) for e in client.run_on_scheduler(scheduler_log)]
    for worker, log_ in client.run(worker_log).items():
        events += [(f"worker{worker[-6:]}", *e) for e in log_]
    for who, key, start, finish, when in sorted(events, key=lambda e: e[-1]):
        label = key.split("[")[0]
        first = seen.setdefault(key, len([k for k in seen if k.split("[")[0] == label]))
        if first < 3:
            OUT.write(f"{when - T0:8.3f} transition {who} {key}: {start}->{finish}\n")
    imported = client.run_on_scheduler(lambda: sorted(m for m in __import__("sys").modules if m.startswith("pipelines")))
    OUT.write(f"scheduler's pipelines modules: {imported}\n")
    cpu = lambda: __import__("time").process_time()  # noqa: E731
    OUT.write(f"CPU s so far: scheduler {client.run_on_scheduler(cpu):.2f}, workers "
              f"{', '.join(f'{t:.2f}' for t in client.run(cpu).values())}\n")


executors.PrefectDask.session = session
log("main")
code = cli.main(sys.argv[1:])
log("main returned")
sys.exit(code)
