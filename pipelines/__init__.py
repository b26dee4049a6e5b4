"""Sluice pipelines: configs, readers, the engine, Prefect flows, releases and the `sluice` CLI."""
