"""The curate engine: stream train in chunks (normalize, filter, decontaminate, dedup), then resolve label
conflicts and write the same artifact format plus dropped/changed/conflicts JSONL.

Pass 1 writes one decision file per chunk of train rows (`work/pass1-NNNNNN.jsonl`, with the signatures of
the rows it kept in a .npy beside it), atomically; after a kill, a rerun replays the finished chunks into the
index instead of computing them again. Pass 2 streams those files into the outputs. In memory: the exact-key
table, the LSH index and signatures of kept rows, their ids and labels, and label counts of duplicate
clusters; never the rows. `metrics.dedup.index_bytes_estimate` gives the figure for a run (bench/data.py
measures it: `curate_memory`).
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from llmopt import faults
from llmopt.data.curate.dedup import MinHasher, NearIndex, dedup_key, exact_hash
from llmopt.data.curate.filters import first_failure
from llmopt.data.curate.rows import AtomicLines, iter_rows
from llmopt.data.curate.normalize import normalize
from llmopt.errors import DataError
from llmopt.fsutil import atomic_write_bytes, read_json, read_jsonl

EXAMPLES_PER_REASON = 3


def _chunks(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


class _Index:
    """Exact keys and MinHash LSH of a set of rows (the kept train rows, or dev+test for decontamination)."""

    def __init__(self, cfg: Any, hasher: MinHasher | None):
        self.cfg = cfg
        self.ids: list[str] = []
        self.labels: list[Any] = []
        self.exact: dict[str, int] = {}
        self.near = NearIndex(hasher, cfg.dedup.threshold) if hasher is not None else None

    def add(self, row_id: str, label: Any, h: str, sig: np.ndarray | None) -> int:
        k = len(self.ids)
        self.ids.append(row_id)
        self.labels.append(label)
        self.exact.setdefault(h, k)
        if self.near is not None and sig is not None:
            self.near.add(k, sig)
        return k

    def match(self, h: str, sig: np.ndarray | None, exact: bool) -> tuple[int, str, float] | None:
        """(key, 'exact' or 'near', similarity) of an added row this one duplicates."""
        if exact and h in self.exact:
            return self.exact[h], "exact", 1.0
        if self.near is not None and sig is not None and (m := self.near.best(sig)) is not None:
            return m[0], "near", m[1]
        return None


class Curator:
    def __init__(self, cfg: Any):
        self.cfg = cfg
        d = cfg.dedup
        self.hasher = MinHasher(d) if d.near else None
        self.held = _Index(cfg, self.hasher)
        self.train = _Index(cfg, self.hasher)
        self.clusters: dict[int, Counter] = {}  # kept row → label counts of it and its duplicates

    def _prepare(self, rows: list[tuple[str, dict]]) -> tuple[list[dict], list]:
        recs = []
        for rid, row in rows:
            text, changes = normalize(row["text"], self.cfg.normalize)
            rec = {"id": rid, "label": row["label"], "text": text,
                   "extra": {k: v for k, v in row.items() if k not in ("id", "text", "label")}}
            if changes:
                rec["changes"], rec["original"] = changes, row["text"]
            reason = first_failure(text, self.cfg.filters)
            if reason:
                rec["status"], rec["reason"] = "drop", reason
            else:
                key = dedup_key(text, self.cfg.dedup)
                rec["hash"], rec["_key"] = exact_hash(key), key
            recs.append(rec)
        live = [r for r in recs if "hash" in r]
        sigs = self.hasher.signatures([r.pop("_key") for r in live]) if self.hasher else [None] * len(live)
        for r, s in zip(live, sigs):
            r["_sig"] = s
        return recs, sigs

    def add_held_out(self, split: str, rows: list[tuple[str, dict]]) -> None:
        recs, _ = self._prepare(rows)
        for r in recs:
            if "hash" in r:
                rid = r["id"] if r["id"].startswith(f"{split}-") else f"{split}:{r['id']}"
                self.held.add(rid, r["label"], r["hash"], r.pop("_sig"))

    def process(self, rows: list[tuple[str, dict]]) -> tuple[list[dict], np.ndarray]:
        """Decide every row of a train chunk; returns the decisions and the signatures of the rows kept."""
        recs, _ = self._prepare(rows)
        kept_sigs = []
        d = self.cfg.dedup
        for r in recs:
            if r.get("status") == "drop":
                continue
            sig = r.pop("_sig")
            if self.cfg.decontaminate and (m := self.held.match(r["hash"], sig, exact=True)):
                k, how, sim = m
                r.update(status="drop", reason=f"contamination_{how}", duplicate_of=self.held.ids[k],
                         similarity=round(sim, 3))
                continue
            if (m := self.train.match(r["hash"], sig, exact=d.exact)) is not None:
                self._duplicate(r, *m)
                continue
            r["status"] = "keep"
            r["has_sig"] = sig is not None
            r["k"] = self.train.add(r["id"], r["label"], r["hash"], sig)
            if sig is not None:
                kept_sigs.append(sig)
        n_perm = d.num_perm
        return recs, (np.stack(kept_sigs) if kept_sigs else np.zeros((0, n_perm), dtype=np.uint32))

    def _duplicate(self, r: dict, k: int, how: str, sim: float) -> None:
        rep_label = self.train.labels[k]
        counts = self.clusters.setdefault(k, Counter({rep_label: 1}))
        counts[r["label"]] += 1
        r.update(status="drop" if r["label"] == rep_label else "conflict", reason=f"{how}_duplicate",
                 duplicate_of=self.train.ids[k], rep=k, similarity=round(sim, 3))

    def replay(self, recs: list[dict], sigs: np.ndarray) -> None:
        """Rebuild the index from a finished chunk's decisions, exactly as `process` left it."""
        j = 0
        for r in recs:
            if r["status"] == "keep":
                sig = None
                if r.get("has_sig"):
                    sig, j = sigs[j], j + 1
                self.train.add(r["id"], r["label"], r["hash"], sig)
            elif "rep" in r:
                counts = self.clusters.setdefault(r["rep"], Counter({self.train.labels[r["rep"]]: 1}))
                counts[r["label"]] += 1


def _copy_atomic(src: Path, dst: Path) -> None:
    with open(src, "rb") as f:
        atomic_write_bytes(dst, f.read()) if src.stat().st_size < (64 << 20) else _copy_big(src, dst)


def _copy_big(src: Path, dst: Path) -> None:
    with AtomicLines(dst) as w, open(src, encoding="utf-8") as f:
        for line in f:
            w.write_raw(line)


def curate_artifact(src: Path, out: Path, work: Path, cfg: Any) -> dict[str, Any]:
    """Curate the data artifact in `src` into `out` (train.jsonl curated; dev/test copied byte for byte)."""
    src, out, work = Path(src), Path(out), Path(work)
    t0 = time.perf_counter()
    read_json(src / "labels.json")  # a data artifact (fails clearly if not)
    cur = Curator(cfg)
    rows_in = {}
    for split in ("dev", "test"):
        n = 0
        for chunk in _chunks(iter_rows(src / f"{split}.jsonl", split), cfg.chunk_rows):
            n += len(chunk)
            if cfg.decontaminate:
                cur.add_held_out(split, chunk)
        rows_in[split] = n
    t_held = time.perf_counter()

    # pass 1: decisions per chunk, written atomically (the .npy first: the .jsonl marks the chunk finished)
    work.mkdir(parents=True, exist_ok=True)
    n_chunks = reused = n_train = 0
    for ci, chunk in enumerate(_chunks(iter_rows(src / "train.jsonl", "train"), cfg.chunk_rows)):
        n_chunks, n_train = ci + 1, n_train + len(chunk)
        dec, npy = work / f"pass1-{ci:06d}.jsonl", work / f"pass1-{ci:06d}.npy"
        if dec.exists() and npy.exists():
            cur.replay(read_jsonl(dec), np.load(npy))
            reused += 1
            continue
        recs, sigs = cur.process(chunk)
        import io

        buf = io.BytesIO()
        np.save(buf, sigs)
        atomic_write_bytes(npy, buf.getvalue())
        with AtomicLines(dec) as w:
            for r in recs:
                w.write(r)
        faults.point("curate.chunk")
    rows_in["train"] = n_train
    t_pass1 = time.perf_counter()

    # label conflicts: clusters whose members disagree
    policy = cfg.label_conflicts
    verdict: dict[int, tuple[str, str | None]] = {}  # kept row → (resolution, label to keep or None: dropped)
    for k, counts in cur.clusters.items():
        if len(counts) < 2:
            continue
        top = counts.most_common()
        if policy == "drop":
            verdict[k] = ("dropped", None)
        elif policy == "majority":
            verdict[k] = ("tie: dropped", None) if top[0][1] == top[1][1] else (f"majority '{top[0][0]}'", top[0][0])
        else:
            verdict[k] = ("sent to review", cur.train.labels[k])
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
        for ci in range(n_chunks):
            for r in read_jsonl(work / f"pass1-{ci:06d}.jsonl"):
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
                    groups[key] = {"id": r["id"], "text": r["text"], "labels": dict(cur.clusters[key]),
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

    d = cfg.dedup
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
                  "lsh_bands": cur.train.near.bands if cur.train.near else None,
                  "index_rows": len(cur.train.ids) + len(cur.held.ids),
                  "index_bytes_estimate": (len(cur.train.ids) + len(cur.held.ids)) * _bytes_per_row(cur)},
        "seconds": {"held_out": round(t_held - t0, 3), "pass1": round(t_pass1 - t_held, 3),
                    "pass2": round(t_end - t_pass1, 3)},
    }


def _bytes_per_row(cur: Curator) -> int:
    """In-memory cost of one indexed row, checked with tracemalloc (bench/data.py `curate_memory`): its signature
    (x1.5 for the doubling array), 12 bytes per LSH band entry (up to 48 at the peak of a run merge: both runs,
    the merged copy and argsort's indices), ~250 bytes of exact key, id and label."""
    near = cur.train.near
    return (int(near.hasher.cfg.num_perm * 4 * 1.5) + near.bands * 48 if near else 0) + 250
