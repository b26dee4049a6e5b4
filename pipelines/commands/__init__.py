"""One module per one-off verb (`sluice dedup`, `sluice filter`, ...). Each defines
`add_command(commands)`, which adds its subparser with `handler=` set; `pipelines/cli.py` loads them all."""

COMMAND_MODULES: list[str] = [
    "pipelines.commands.release",
    "pipelines.commands.inspect",
    "pipelines.commands.dedup",
    "pipelines.commands.serve_local",
    "pipelines.commands.sample",
    "pipelines.commands.filter",
    "pipelines.commands.quality",
    "pipelines.commands.decontaminate",
    "pipelines.commands.cache",
]
