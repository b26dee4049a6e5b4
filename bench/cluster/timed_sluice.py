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
wrap(executors, "prefect_map", "map")
wrap(cache.ShardCache, "drop_spills", "cache.drop_spills")
_wait, _stop = flow.ApiServer.wait, flow.ApiServer.stop
flow.ApiServer.wait = lambda self, timeout: (_wait(self, timeout), log(f"server answers, its CPU {server_cpu(self):.2f} s"))
flow.ApiServer.stop = lambda self: (self.alive() and log(f"server stop, its CPU {server_cpu(self):.2f} s"), _stop(self))
_session = executors.PrefectDask.session


@contextmanager
def session(self):
    log("> dask.session")
    with _session(self):
        log("= dask.session entered")
        yield
        log("> dask.session exit")
    log("< dask.session")


executors.PrefectDask.session = session
log("main")
code = cli.main(sys.argv[1:])
log("main returned")
sys.exit(code)
