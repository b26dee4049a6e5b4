"""The dataset card: the release's README.md, Hugging Face style (YAML header, then what went in and out)."""

from __future__ import annotations

from typing import Any

from pipelines.accounting import Ledger


def dataset_card(manifest: dict[str, Any]) -> str:
    config = manifest.get("config", {})
    license_ = config.get("release", {}).get("license", "other")
    header = "\n".join([
        "---",
        f"license: {license_}",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/*.parquet",
        "---",
    ])
    ledger = Ledger.from_json(manifest["stages"])
    return (
        f"{header}\n\n# {manifest['dataset']} {manifest['version']}\n\n"
        f"{config.get('release', {}).get('description', '')}\n\n"
        f"{manifest['rows']:,} rows in {len(manifest['shards'])} Parquet shard(s); "
        f"{manifest['rejected_rows']:,} rejected rows with their reasons in rejects/.\n\n"
        f"## Inputs\n\n" + "".join(f"- `{i['path']}` ({i['rows']:,} rows, sha256 `{i['sha256'][:16]}...`)\n"
                                    for i in manifest["inputs"])
        + f"\n## Row accounting\n\n```\n{ledger.table()}\n```\n"
    )
