"""`sluice cache [list] | clear DATASET... | clear --all`: the shard cache of each dataset (what resume reuses)."""

from __future__ import annotations

import argparse

from operators.errors import ConfigError
from pipelines import storage
from pipelines.card import human_bytes
from pipelines.release import DEFAULT_ROOT, dataset_lock
from pipelines.storage import Location, location_arg


def add_command(commands: argparse._SubParsersAction) -> None:
    cache = commands.add_parser(
        "cache", help="show or clear the shard cache that lets a run resume",
        description="Each dataset keeps the shard results of its last run in <releases>/<dataset>/.cache/, so an "
        "interrupted or re-configured run resumes instead of recomputing. It is several times the size of the "
        "input; clearing it loses nothing published, the next run just computes every shard again.")
    verbs = cache.add_subparsers(title="cache commands", metavar="VERB")
    show = verbs.add_parser("list", help="size of each dataset's cache", description="Size of each dataset's cache.")
    clear = verbs.add_parser("clear", help="delete the cache of the named datasets (or --all)",
                             description="Delete the shard cache of the named datasets (or of every dataset). "
                             "Published releases are not touched. A dataset being run is left alone, with an error.")
    clear.add_argument("datasets", nargs="*", metavar="DATASET")
    clear.add_argument("--all", action="store_true", help="every dataset under the release root")
    for verb in (cache, show, clear):
        verb.add_argument("--releases", type=location_arg, default=None,
                          help="release root, a folder or a URL (default: ./data/releases); a cache on a bucket "
                          "has no lock: clear it only when no run of that dataset is going")
    cache.set_defaults(handler=_list)
    show.set_defaults(handler=_list)
    clear.set_defaults(handler=_clear)


def cache_dirs(root: Location) -> dict[str, Location]:
    """dataset -> its cache folder, for every dataset under `root` that has one."""
    if storage.is_remote(root):
        return {name: storage.join(root, name, ".cache") for name in storage.list_names(root)
                if not name.startswith(".") and ".cache" in storage.list_names(storage.join(root, name))}
    found = root.glob("*/.cache") if root.is_dir() else []
    return {p.parent.name: p for p in sorted(found) if p.is_dir()}


def folder_bytes(folder: Location) -> int:
    return storage.tree_bytes(folder)


def _list(args: argparse.Namespace) -> int:
    root = args.releases or DEFAULT_ROOT
    caches = cache_dirs(root)
    if not caches:
        print(f"no shard cache under {storage.display(root)}")
        return 0
    sizes = {name: folder_bytes(folder) for name, folder in caches.items()}
    width = max(map(len, [*sizes, "total"]))
    for name, size in sizes.items():
        print(f"{name:<{width}}  {human_bytes(size):>9}  {storage.display(caches[name])}")
    print(f"{'total':<{width}}  {human_bytes(sum(sizes.values())):>9}  (`sluice cache clear DATASET` frees one)")
    return 0


def _clear(args: argparse.Namespace) -> int:
    root = args.releases or DEFAULT_ROOT
    caches = cache_dirs(root)
    if args.all == bool(args.datasets):
        raise ConfigError("name the datasets whose cache to clear, or pass --all (not both)")
    datasets = set(storage.list_names(root))
    unknown = [name for name in args.datasets if name not in datasets]
    if unknown:
        raise ConfigError(f"no dataset {', '.join(unknown)} under {storage.display(root)}; datasets: "
                          f"{', '.join(sorted(caches)) or 'none'}")
    freed = 0
    for name in (caches if args.all else args.datasets):
        folder = storage.join(root, name, ".cache")
        if name not in caches:
            print(f"{name}: no cache")
            continue
        with dataset_lock(storage.join(root, name)):  # never pull shards from under a running run (local only)
            size = folder_bytes(folder)
            storage.remove_tree(folder)
        freed += size
        print(f"{name}: cleared {human_bytes(size)} ({storage.display(folder)})")
    if args.all or len(args.datasets) > 1:
        print(f"freed {human_bytes(freed)}")
    return 0
