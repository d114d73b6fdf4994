"""The curate engine: partitions of train rows are normalized, filtered, decontaminated and MinHashed on an
executor (in this process, a local process pool or a Dask cluster: `partitions.py` has the row logic and the
group-bys), the duplicates are resolved from the exact-hash and LSH band group-bys, and the decisions are
streamed into the same artifact format plus dropped/changed/conflicts JSONL.

Each partition's files are committed atomically (`work/pass1-NNNNNN.jsonl` last); after a kill, a rerun
reuses the finished partitions and redoes the others. `work/manifest.json` lists the partitions the group-bys
read. In memory here: one partition in flight per worker (x2), the exact duplicates and verified near pairs,
and the label counts of duplicate clusters; never the rows.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from llmopt.data.curate import partitions as P
from llmopt.data.curate.rows import AtomicLines
from llmopt.errors import DataError
from llmopt.fsutil import atomic_write_bytes, atomic_write_json, read_json, read_jsonl

EXAMPLES_PER_REASON = 3


def _copy_atomic(src: Path, dst: Path) -> None:
    with open(src, "rb") as f:
        atomic_write_bytes(dst, f.read()) if src.stat().st_size < (64 << 20) else _copy_big(src, dst)


def _copy_big(src: Path, dst: Path) -> None:
    with AtomicLines(dst) as w, open(src, encoding="utf-8") as f:
        for line in f:
            w.write_raw(line)


def _load_all(work: Path, pattern: str, dtype: np.dtype) -> np.ndarray:
    parts = [P.load_npy(p) for p in sorted(work.glob(pattern))]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def curate_artifact(src: Path, out: Path, work: Path, cfg: Any, executor: Any = None) -> dict[str, Any]:
    """Curate the data artifact in `src` into `out` (train curated; dev/test copied byte for byte). `executor`:
    an entered executor (executors.make_executor); None runs in this process."""
    from llmopt.data.curate.executors import InProcess

    src, out, work = Path(src), Path(out), Path(work)
    ex = executor or InProcess()
    ecfg = getattr(cfg, "executor", None)
    shards = ecfg.shards if ecfg is not None else 8
    t0 = time.perf_counter()
    read_json(src / "labels.json")  # a data artifact (fails clearly if not)
    train_path = P.train_source(src)
    work.mkdir(parents=True, exist_ok=True)
    rows_in = P.build_held(src, cfg, work, cfg.chunk_rows)
    t_held = time.perf_counter()

    # map: row-wise work per partition; finished partitions (their .jsonl committed) are reused
    metas: dict[int, dict] = {}
    todo = []
    for spec in P.scan(train_path, cfg.chunk_rows):
        mark = P.part_path(work, spec.index, "jsonl")
        meta_p = P.part_path(work, spec.index, "meta.json")
        if mark.exists() and meta_p.exists():
            m = read_json(meta_p)
            if (m.get("shards"), m.get("n_rows"), m.get("first_row")) == (shards, spec.n_rows, spec.first_row):
                metas[spec.index] = {k: m[k] for k in ("index", "first_row", "n_rows", "n_live", "ex_off",
                                                        "bd_off", "shards")}
                continue
        todo.append(spec)
    reused = len(metas)
    for _, m in ex.map_unordered(P.map_partition, ((s, cfg, str(work), shards) for s in todo)):
        metas[m["index"]] = m
    ordered = [metas[i] for i in sorted(metas)]
    n_chunks, n_train = len(ordered), sum(m["n_rows"] for m in ordered)
    rows_in["train"] = n_train
    t_map = time.perf_counter()

    # group-bys: exact hash, then LSH band keys of the representatives; resolve in file order
    for stale in list(work.glob("shuffle-*.npy")) + [work / "nonrep.npy"]:
        stale.unlink(missing_ok=True)
    atomic_write_json(work / "manifest.json", {"shards": shards, "partitions": ordered})
    d = cfg.dedup
    nonrep = np.zeros(0, dtype=P.NONREP_DT)
    edges = np.zeros(0, dtype=P.EDGE_DT)
    if d.exact or d.near:
        list(ex.map_unordered(P.reduce_exact, ((str(work), s) for s in range(shards))))
        nonrep = _load_all(work, "shuffle-exact-*.npy", P.NONREP_DT)
        nonrep = nonrep[np.argsort(nonrep["g"], kind="stable")]
        P._save_npy(work / "nonrep.npy", np.ascontiguousarray(nonrep["g"]))
    if d.near:
        list(ex.map_unordered(P.reduce_bands, ((str(work), s, d.threshold) for s in range(shards))))
        edges = _load_all(work, "shuffle-near-*.npy", P.EDGE_DT)
        if len(edges):  # a pair sharing keys in several shards is found once per shard
            _, first = np.unique(np.stack([edges["a"], edges["b"]], axis=1), axis=0, return_index=True)
            edges = edges[np.sort(first)]
    dup = P.resolve(nonrep, edges, d.exact, d.near) if (d.exact or d.near) else {}
    t_group = time.perf_counter()

    # ids and labels of the rows in duplicate clusters (kept rows and their duplicates)
    involved = sorted(set(dup) | {k for k, _, _ in dup.values()})
    id_of: dict[int, str] = {}
    label_of: dict[int, Any] = {}
    starts = np.array([m["first_row"] for m in ordered], dtype=np.int64)
    if involved:
        inv = np.asarray(involved, dtype=np.int64)
        pidx = np.searchsorted(starts, inv, side="right") - 1
        for pi in np.unique(pidx):
            m = ordered[int(pi)]
            full = read_json(P.part_path(work, m["index"], "meta.json"))
            for g in inv[pidx == pi].tolist():
                id_of[g], label_of[g] = full["ids"][g - m["first_row"]], full["labels"][g - m["first_row"]]
    clusters: dict[int, Counter] = {}  # kept row → label counts of it and its duplicates
    for g in sorted(dup):
        k = dup[g][0]
        clusters.setdefault(k, Counter({label_of[k]: 1}))[label_of[g]] += 1

    # label conflicts: clusters whose members disagree
    policy = cfg.label_conflicts
    verdict: dict[int, tuple[str, str | None]] = {}  # kept row → (resolution, label to keep or None: dropped)
    for k, counts in clusters.items():
        if len(counts) < 2:
            continue
        top = counts.most_common()
        if policy == "drop":
            verdict[k] = ("dropped", None)
        elif policy == "majority":
            verdict[k] = ("tie: dropped", None) if top[0][1] == top[1][1] else (f"majority '{top[0][0]}'", top[0][0])
        else:
            verdict[k] = ("sent to review", label_of[k])
    groups: dict[int, dict] = {}

    # pass 2: stream the decisions into the outputs
    dropped, changed = Counter(), Counter()
    examples: dict[str, list] = {}
    kept = 0

    def example(reason: str, item: dict) -> None:
        lst = examples.setdefault(reason, [])
        if len(lst) < EXAMPLES_PER_REASON:
            lst.append(item)

    with AtomicLines(out / "train.jsonl") as tw, AtomicLines(out / "dropped.jsonl") as dw, \
            AtomicLines(out / "changed.jsonl") as cw:
        for m in ordered:
            for i, r in enumerate(read_jsonl(P.part_path(work, m["index"], "jsonl"))):
                if r["status"] == "live":
                    g = m["first_row"] + i
                    if g in dup:
                        k, how, sim = dup[g]
                        r.update(status="drop", reason=f"{how}_duplicate", duplicate_of=id_of[k], rep=k,
                                 similarity=round(sim, 3))
                    else:
                        r.update(status="keep", k=g)
                rep = r.get("rep")
                key = r.get("k")
                for change in r.get("changes", []):
                    changed[change] += 1
                if r.get("changes"):
                    item = {"id": r["id"], "changes": r["changes"], "before": r["original"], "after": r["text"]}
                    cw.write(item)
                    for change in r["changes"]:
                        example(f"changed:{change}", item)
                label = r["label"]
                status, reason = r["status"], r.get("reason")
                if status == "keep" and key in verdict:
                    res, keep_label = verdict[key]
                    groups[key] = {"id": r["id"], "text": r["text"], "labels": dict(clusters[key]),
                                   "resolution": res, "members": [{"id": r["id"], "label": label}]}
                    if keep_label is None:
                        status, reason = "drop", "label_conflict"
                    elif keep_label != label:
                        label = keep_label
                        item = {"id": r["id"], "changes": ["label_majority"], "label_before": r["label"],
                                "label_after": label, "text": r["text"]}
                        cw.write(item)
                        changed["label_majority"] += 1
                        example("changed:label_majority", item)
                elif rep is not None and rep in verdict:
                    groups.setdefault(rep, {"members": []})["members"].append({"id": r["id"], "label": label,
                                                                               "text": r["text"]})
                    _, keep_label = verdict[rep]
                    if keep_label is None or label != keep_label:
                        reason = "label_conflict"
                    status = "drop"
                if status == "keep":
                    tw.write({"id": r["id"], "text": r["text"], "label": label, **r.get("extra", {})})
                    kept += 1
                else:
                    item = {"id": r["id"], "reason": reason, "text": r["text"], "label": label}
                    if r.get("duplicate_of") is not None:
                        item["duplicate_of"] = r["duplicate_of"]
                        item["similarity"] = r.get("similarity")
                    dw.write(item)
                    dropped[reason] += 1
                    example(reason, item)
        if kept == 0:
            if n_train and dropped.get("empty", 0) == n_train:
                raise DataError(f"{src / 'train.jsonl'}: the text of every one of its {n_train} rows is empty. "
                                "Check the data stage's text_column.")
            raise DataError(f"curate kept 0 of the {n_train} train rows ({dict(dropped)}). "
                            "Loosen the filters in the curate stage.")
    with AtomicLines(out / "conflicts.jsonl") as fw:
        for g in groups.values():
            fw.write(g)
    if policy == "review":
        with AtomicLines(out / "review_items.jsonl") as rw:
            for g in groups.values():
                rw.write({"kind": "label_conflict", **g})
    for split in ("dev", "test"):
        _copy_atomic(src / f"{split}.jsonl", out / f"{split}.jsonl")
    shutil.copyfile(src / "labels.json", out / "labels.json.tmp")
    Path(out / "labels.json.tmp").replace(out / "labels.json")
    t_end = time.perf_counter()

    lsh_bands = None
    if d.near:
        from llmopt.data.curate.dedup import LSH_WEIGHTS, CompactLSH

        lsh_bands = CompactLSH(d.threshold, d.num_perm, LSH_WEIGHTS).b
    return {
        "rows_in": rows_in,
        "rows_out": {"train": kept, "dev": rows_in["dev"], "test": rows_in["test"]},
        "dropped": dict(dropped.most_common()),
        "changed": dict(changed.most_common()),
        "label_conflicts": {"policy": policy, "groups": len(groups),
                            "rows": sum(len(g["members"]) for g in groups.values())},
        "examples": examples,
        "chunks": n_chunks, "chunks_reused": reused, "chunk_rows": cfg.chunk_rows,
        "dedup": {"exact": d.exact, "near": d.near, "key": d.key, "unit": d.unit, "shingle": d.shingle,
                  "num_perm": d.num_perm, "threshold": d.threshold, "keep": d.keep,
                  "lsh_bands": lsh_bands, "exact_duplicates": int(len(nonrep)), "near_pairs": int(len(edges)),
                  "index_rows": rows_in["dev"] + rows_in["test"] + len(dup),
                  "index_bytes_estimate": int(nonrep.nbytes + edges.nbytes) + 200 * len(dup)},
        "executor": {"kind": ex.kind, "workers": getattr(ex, "workers", 1), "shards": shards},
        "seconds": {"held_out": round(t_held - t0, 3), "pass1": round(t_map - t_held, 3),
                    "group_by": round(t_group - t_map, 3), "pass2": round(t_end - t_group, 3)},
    }
