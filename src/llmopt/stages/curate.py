"""curate stage: normalize, filter (with reasons), decontaminate and deduplicate a data stage's splits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from llmopt.data.curate.config import DedupConfig, ExecutorConfig, FilterConfig, NormalizeConfig
from llmopt.stages.base import StageConfig, StageContext, StageRef, StageResult


class CurateConfig(StageConfig):
    """Clean the train split of a data stage; dev and test are copied unchanged. Later stages take `data: <this id>`."""

    type: Literal["curate"] = "curate"
    data: StageRef = "data"
    normalize: NormalizeConfig = NormalizeConfig()
    filters: FilterConfig = FilterConfig()
    dedup: DedupConfig = DedupConfig()
    decontaminate: bool = Field(True, description="drop train rows that exactly or nearly duplicate a dev/test row")
    label_conflicts: Literal["drop", "majority", "review"] = Field(
        "majority", description="duplicates that disagree on the label: drop the cluster, keep its majority label "
                                "(a tie drops it), or keep the first row and write the cluster to review_items.jsonl")
    chunk_rows: int = Field(10_000, ge=100, description="train rows per partition (a finished one survives a kill)")
    executor: ExecutorConfig = Field(ExecutorConfig(), description="where partitions run: inprocess (default), "
                                     "pool (local processes) or dask (a cluster address, or local)")


def run(cfg: CurateConfig, ctx: StageContext) -> StageResult:
    """Curate `cfg.data`'s artifact into artifacts/ (train/dev/test.jsonl, labels.json, dropped.jsonl,
    changed.jsonl, conflicts.jsonl, and review_items.jsonl under the review policy)."""
    import shutil

    from llmopt.data.curate.engine import curate_artifact
    from llmopt.data.curate.executors import make_executor

    work = ctx.stage_dir / "work"  # per-partition decisions: what a rerun after a kill reuses
    with make_executor(cfg.executor) as ex:
        metrics = curate_artifact(ctx.artifacts_of(cfg.data), ctx.out_dir, work, cfg, ex)
    shutil.rmtree(work, ignore_errors=True)  # the outputs are complete; the decisions are a copy of the data
    return StageResult({"source_stage": cfg.data, **metrics})


def section(sid: str, m: dict, doc: Any) -> None:
    """Rows in and out, counts per drop reason and per normalizer, label conflicts, and a few examples per reason."""
    doc.h(2, f"Curation ({sid})")
    rin, rout = m["rows_in"]["train"], m["rows_out"]["train"]
    lc = m["label_conflicts"]
    doc.p(f"Train rows of stage '{m['source_stage']}': {rin:,} in, {rout:,} kept, {rin - rout:,} dropped; "
          f"dev ({m['rows_in']['dev']:,}) and test ({m['rows_in']['test']:,}) copied unchanged. "
          f"Label conflicts ({lc['policy']}): {lc['groups']} groups, {lc['rows']} rows.")
    d = m["dedup"]
    doc.p(f"Duplicates: exact by a hash of the {d['key']} text; near by MinHash ({d['num_perm']} permutations, "
          f"{d['shingle']}-{d['unit']} shingles, Jaccard ≥ {d['threshold']}, LSH bands {d['lsh_bands']}); "
          f"the {d['keep']} row seen of each cluster is kept.")
    if m["dropped"]:
        doc.table(["dropped because", "rows"], [[r, f"{n:,}"] for r, n in m["dropped"].items()])
    if m["changed"]:
        doc.table(["changed by", "rows"], [[r, f"{n:,}"] for r, n in m["changed"].items()])
    rows = []
    for reason, items in m.get("examples", {}).items():
        for it in items:
            rows.append([reason, it["id"], _short(it.get("before", it.get("text", ""))),
                         _short(it["after"]) if "after" in it else "",
                         f"{it['duplicate_of']} ({it.get('similarity')})" if it.get("duplicate_of") else ""])
    if rows:
        doc.table(["reason", "row", "text", "after the change", "duplicate of (similarity)"], rows)


def _short(text: str, n: int = 90) -> str:
    return text[:n] + "…" if len(text) > n else text
