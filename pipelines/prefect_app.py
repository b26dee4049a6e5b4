"""The app of a run's temporary Prefect API server (flow.ApiServer), built in the server's own process.

It is Prefect's own app, on a database of the run's own: the SQLite file flow.ApiServer names in SLUICE_PREFECT_DB
(in a temporary folder removed when the server stops: by the run or, if the run was killed, by the server), started
as a copy of an empty database Prefect has already migrated (SLUICE_PREFECT_TEMPLATE; without it Prefect migrates
a new file, ~8 CPU s). So runs leave no history behind in ~/.prefect/prefect.db, and two runs at once do not share
(and lock) one file. A database the user configured for Prefect (PREFECT_API_DATABASE_CONNECTION_URL or its parts,
in the environment, a profile, prefect.toml or .env) is used instead. Decided here, where Prefect reads its settings
anyway: the run's own process has not imported Prefect yet when it starts the server (that import alone takes ~3 s).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

RUN_DB = "SLUICE_PREFECT_DB"
TEMPLATE = "SLUICE_PREFECT_TEMPLATE"
FOLDER = "sluice-prefect-"  # the prefix of the run's temporary folder, that holds the database
# the settings that name a database (prefect.settings.models.server.database: the URL, or its parts)
DATABASE_SETTINGS = {"connection_url", "driver", "host", "port", "user", "password", "name"}


def create_app() -> Any:
    from prefect.settings import get_current_settings

    run_db = os.environ.pop(RUN_DB, None)
    template = os.environ.pop(TEMPLATE, None)
    if run_db and not get_current_settings().server.database.model_fields_set & DATABASE_SETTINGS:
        if template and Path(template).is_file():
            shutil.copyfile(template, run_db)
        os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{run_db}"
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
    from prefect.server.api.server import create_app as prefect_app

    app = prefect_app()
    if not run_db or not Path(run_db).parent.name.startswith(FOLDER):
        return app

    async def removing_its_folder(scope: dict, receive: Any, send: Any) -> None:
        """Prefect's app; once it has shut down (uvicorn then ends by the SIGTERM it got, so no atexit runs),
        the run's folder removed: the server outlives a run killed with SIGKILL."""
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "lifespan":
                shutil.rmtree(Path(run_db).parent, ignore_errors=True)

    return removing_its_folder
