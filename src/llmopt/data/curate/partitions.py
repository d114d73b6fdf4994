"""Partitioned curation: the row logic of the curate stage as map and group-by tasks any executor can run.

1. map (one task per partition of `chunk_rows` input rows, streamed from JSONL byte ranges or Parquet row
   groups): normalize, filter, exact hash, MinHash signature, decontamination against dev/test. It writes
   `pass1-NNNNNN.{sig.npy,exact.npy,bands.npy,meta.json}` and last `pass1-NNNNNN.jsonl` (each atomically):
   the .jsonl is the commit mark, so a partition whose worker died is redone, never half-kept.
   `exact.npy` holds (hash, row) and `bands.npy` (LSH band key, row) pairs, each sorted by shuffle shard.
2. group-by exact hash (one task per shard): the first row of each hash is its representative; the others
   are exact duplicates of it (`shuffle-exact-S.npy`).
3. group-by LSH band key (one task per shard), as text-dedup does on Spark: the representatives sharing a
   band key are candidate pairs, verified by the estimated Jaccard similarity of their signatures (read from
   the partitions' signature files) >= threshold (`shuffle-near-S.npy`: row, row, similarity).
4. resolve (the coordinator, over the duplicate rows and verified edges only, never the rows): rows in file
   order; a row with an earlier kept neighbour is a duplicate of the most similar one (ties: the earliest),
   else it is kept. This is the rule of a sequential index of kept rows, so every executor keeps the same
   rows, with the same `duplicate_of`, as a single process would.

No task holds the corpus: a map task holds one partition, a group-by task 1/shards of the keys and, for
the band keys, at most MAX_PAIRS candidate pairs over MAX_ROWS rows' signatures at a time.
"""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmopt import faults
from llmopt.data.curate.dedup import CompactLSH, LSH_WEIGHTS, MinHasher, NearIndex, dedup_key, exact_hash
from llmopt.data.curate.filters import first_failure
from llmopt.data.curate.normalize import normalize
from llmopt.data.curate.rows import AtomicLines, iter_rows, parse_row, row_id
from llmopt.errors import DataError
from llmopt.fsutil import atomic_write_bytes, atomic_write_json, read_json

EXACT_DT = np.dtype([("h0", "<u8"), ("h1", "<u8"), ("g", "<i8"), ("s", "u1")])
BAND_DT = np.dtype([("k", "<u8"), ("g", "<i8")])
NONREP_DT = np.dtype([("g", "<i8"), ("r", "<i8"), ("s", "u1")])
EDGE_DT = np.dtype([("a", "<i8"), ("b", "<i8"), ("sim", "<f8")])
KILL_ONCE = "LLMOPT_CURATE_KILL_ONCE"  # tests: a file whose claimer SIGKILLs itself mid-partition (one worker)


_NPY_LOCK = threading.Lock()


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """np.load under a lock: its header parser (ast.literal_eval) is not thread-safe on CPython 3.11, and Dask
    workers may be threads of one process ('AST constructor recursion depth mismatch')."""
    with _NPY_LOCK:
        return np.load(path, mmap_mode="r" if mmap else None)


@dataclass(frozen=True)
class PartSpec:
    """One input partition: a byte range of a JSONL file, or one row group of a Parquet file."""

    index: int
    path: str
    kind: str  # jsonl | parquet
    start: int  # byte offset (jsonl) or row group (parquet)
    end: int
    first_row: int  # global index of its first row (ids 'train-<n>' count from it)
    first_line: int
    n_rows: int


def train_source(src: Path) -> Path:
    for name in ("train.jsonl", "train.parquet"):
        if (src / name).is_file():
            return src / name
    raise DataError(f"{src}: no train.jsonl or train.parquet. Rerun the data stage this curate stage reads.")


def scan(path: Path, chunk_rows: int) -> Iterator[PartSpec]:
    """Partitions of the train file, found by one streaming pass (JSONL: counts non-blank lines; Parquet: the
    row groups' metadata)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        md = pq.ParquetFile(path).metadata
        first = 0
        for i in range(md.num_row_groups):
            n = md.row_group(i).num_rows
            yield PartSpec(i, str(path), "parquet", i, i + 1, first, 0, n)
            first += n
        return
    idx = first_row = in_part = lineno = pos = start = 0
    first_line = 1
    with open(path, "rb") as f:
        for line in f:
            lineno += 1
            pos += len(line)
            if line.strip():
                in_part += 1
            if in_part == chunk_rows:
                yield PartSpec(idx, str(path), "jsonl", start, pos, first_row, first_line, in_part)
                idx, first_row, in_part, start, first_line = idx + 1, first_row + in_part, 0, pos, lineno + 1
    if in_part:
        yield PartSpec(idx, str(path), "jsonl", start, pos, first_row, first_line, in_part)


def read_rows(spec: PartSpec, split: str = "train") -> list[tuple[str, dict]]:
    """(row id, row) of a partition, checked as `rows.iter_rows` checks a whole file."""
    out: list[tuple[str, dict]] = []
    n = spec.first_row
    if spec.kind == "parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(spec.path).read_row_group(spec.start)
        for j, row in enumerate(table.to_pylist()):
            if not isinstance(row.get("text"), str) or "label" not in row:
                raise DataError(f"{spec.path}: row {n}: a row needs a string 'text' and a 'label' column "
                                f"(got columns {table.column_names}). Check the data stage's text/label columns.")
            out.append((row_id(row, split, n), row))
            n += 1
        return out
    with open(spec.path, "rb") as f:
        f.seek(spec.start)
        data = f.read(spec.end - spec.start)
    for lineno, line in enumerate(data.decode("utf-8").split("\n"), spec.first_line):
        if line.strip():
            row = parse_row(line, spec.path, lineno)
            out.append((row_id(row, split, n), row))
            n += 1
    return out


_HASHERS: dict[tuple, MinHasher] = {}


def hasher_for(cfg: Any) -> MinHasher | None:
    d = cfg.dedup
    if not d.near:
        return None
    key = (d.num_perm, d.seed, d.unit, d.shingle)
    if key not in _HASHERS:
        _HASHERS[key] = MinHasher(d)
    return _HASHERS[key]


def prepare(rows: list[tuple[str, dict]], cfg: Any) -> list[dict]:
    """Normalize and filter each row; a row that passes gets its exact hash and (near dedup on) '_sig'."""
    recs = []
    keys = []
    for rid, row in rows:
        text, changes = normalize(row["text"], cfg.normalize)
        rec = {"id": rid, "label": row["label"], "text": text,
               "extra": {k: v for k, v in row.items() if k not in ("id", "text", "label")}}
        if changes:
            rec["changes"], rec["original"] = changes, row["text"]
        reason = first_failure(text, cfg.filters)
        if reason:
            rec["status"], rec["reason"] = "drop", reason
        else:
            key = dedup_key(text, cfg.dedup)
            rec["hash"] = exact_hash(key)
            keys.append(key)
        recs.append(rec)
    hasher = hasher_for(cfg)
    sigs = hasher.signatures(keys) if hasher else [None] * len(keys)
    live = (r for r in recs if "hash" in r)
    for r, s in zip(live, sigs):
        r["_sig"] = s
    return recs


class HeldIndex:
    """Exact hashes and MinHash LSH of the dev/test rows: what decontamination matches train rows against."""

    def __init__(self, cfg: Any, ids: list[str], hashes: list[str], sigs: np.ndarray | None, has_sig: list[bool]):
        self.ids = ids
        self.exact: dict[str, int] = {}
        hasher = hasher_for(cfg)
        self.near = NearIndex(hasher, cfg.dedup.threshold) if hasher is not None else None
        for k, h in enumerate(hashes):
            self.exact.setdefault(h, k)
            if self.near is not None and has_sig[k]:
                self.near.add(k, sigs[k])

    def match(self, h: str, sig: np.ndarray | None) -> tuple[int, str, float] | None:
        if h in self.exact:
            return self.exact[h], "exact", 1.0
        if self.near is not None and sig is not None and (m := self.near.best(sig)) is not None:
            return m[0], "near", m[1]
        return None


def build_held(src: Path, cfg: Any, work: Path, chunk_rows: int) -> dict[str, int]:
    """Prepare dev and test (small) here and write the held-out index files the map tasks load."""
    ids: list[str] = []
    hashes: list[str] = []
    sigs: list[np.ndarray | None] = []
    counts = {}
    for split in ("dev", "test"):
        n = 0
        batch: list = []
        for item in iter_rows(src / f"{split}.jsonl", split):
            n += 1
            if cfg.decontaminate:
                batch.append(item)
            if len(batch) >= chunk_rows:
                _held_batch(batch, split, cfg, ids, hashes, sigs)
                batch = []
        _held_batch(batch, split, cfg, ids, hashes, sigs)
        counts[split] = n
    p = cfg.dedup.num_perm
    arr = np.stack([s if s is not None else np.zeros(p, np.uint32) for s in sigs]) if sigs else np.zeros((0, p),
                                                                                                        np.uint32)
    _save_npy(work / "held.sig.npy", arr)
    atomic_write_json(work / "held.json", {"ids": ids, "hashes": hashes, "has_sig": [s is not None for s in sigs]})
    return counts


def _held_batch(batch: list, split: str, cfg: Any, ids: list, hashes: list, sigs: list) -> None:
    if not batch:
        return
    for r in prepare(batch, cfg):
        if "hash" in r:
            ids.append(r["id"] if r["id"].startswith(f"{split}-") else f"{split}:{r['id']}")
            hashes.append(r["hash"])
            sigs.append(r["_sig"])


_HELD: dict[tuple, HeldIndex] = {}


def load_held(work: Path, cfg: Any) -> HeldIndex:
    meta = work / "held.json"
    key = (str(meta), meta.stat().st_mtime_ns, cfg.dedup.near, cfg.dedup.threshold)
    held = _HELD.get(key)
    if held is None:  # (Dask thread workers may build it twice: harmless)
        m = read_json(meta)
        held = HeldIndex(cfg, m["ids"], m["hashes"], load_npy(work / "held.sig.npy"), m["has_sig"])
        _HELD.clear()
        _HELD[key] = held
    return held


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def part_path(work: Path, index: int, suffix: str) -> Path:
    return Path(work) / f"pass1-{index:06d}.{suffix}"


def _by_shard(arr: np.ndarray, shard: np.ndarray, shards: int) -> tuple[np.ndarray, list[int]]:
    order = np.argsort(shard, kind="stable")
    off = np.searchsorted(shard[order], np.arange(shards + 1)).tolist()
    return arr[order], off


def _kill_once() -> None:
    flag = os.environ.get(KILL_ONCE)
    if flag:
        try:
            os.rename(flag, flag + ".claimed")  # exactly one process wins the rename
        except OSError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


def map_partition(spec: PartSpec, cfg: Any, work: str, shards: int) -> dict:
    """Row-wise work of one partition; writes its files (the .jsonl last) and returns its small meta."""
    work = Path(work)
    recs = prepare(read_rows(spec), cfg)
    held = load_held(work, cfg) if cfg.decontaminate else None
    d = cfg.dedup
    n = len(recs)
    sig_all = np.zeros((n, d.num_perm), dtype=np.uint32) if d.near else None
    ex_rows: list[tuple] = []
    band_rows: list[int] = []
    for i, r in enumerate(recs):
        if r.get("status") == "drop":
            continue
        sig, h = r.pop("_sig"), r.pop("hash")
        if held is not None and (m := held.match(h, sig)) is not None:
            k, how, sim = m
            r.update(status="drop", reason=f"contamination_{how}", duplicate_of=held.ids[k], similarity=round(sim, 3))
            continue
        r["status"] = "live"
        g = spec.first_row + i
        hb = np.frombuffer(bytes.fromhex(h), dtype="<u8")
        ex_rows.append((int(hb[0]), int(hb[1]), g, sig is not None))
        if sig is not None:
            sig_all[i] = sig
            band_rows.append(i)
    exact = np.array(ex_rows, dtype=EXACT_DT)
    exact, ex_off = _by_shard(exact, exact["h0"] % np.uint64(shards), shards)
    bd_off = None
    if d.near:
        lsh = CompactLSH(d.threshold, d.num_perm, LSH_WEIGHTS)
        idx = np.asarray(band_rows, dtype=np.int64)
        keys = lsh.band_keys(sig_all[idx]) if len(idx) else np.zeros((0, lsh.b), np.uint64)
        bands = np.empty(keys.size, dtype=BAND_DT)
        bands["k"] = keys.ravel()
        bands["g"] = np.repeat(idx + spec.first_row, lsh.b)
        bands, bd_off = _by_shard(bands, bands["k"] % np.uint64(shards), shards)
        _save_npy(part_path(work, spec.index, "sig.npy"), sig_all)
        _save_npy(part_path(work, spec.index, "bands.npy"), bands)
    _save_npy(part_path(work, spec.index, "exact.npy"), exact)
    meta = {"index": spec.index, "first_row": spec.first_row, "n_rows": n, "n_live": len(ex_rows),
            "ex_off": ex_off, "bd_off": bd_off, "shards": shards}
    atomic_write_json(part_path(work, spec.index, "meta.json"),
                      {**meta, "ids": [r["id"] for r in recs], "labels": [r["label"] for r in recs]})
    _kill_once()
    with AtomicLines(part_path(work, spec.index, "jsonl")) as w:
        for r in recs:
            w.write(r)
    faults.point("curate.chunk")
    return meta


def _gather(work: Path, metas: list[dict], name: str, off_key: str, shard: int, dtype: np.dtype) -> np.ndarray:
    parts = []
    for m in metas:
        a, b = m[off_key][shard], m[off_key][shard + 1]
        if b > a:
            parts.append(np.asarray(load_npy(part_path(work, m["index"], name), mmap=True)[a:b]))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def reduce_exact(work: str, shard: int) -> int:
    """Group-by exact hash for one shard: rows after the first of their hash → `shuffle-exact-S.npy`."""
    work = Path(work)
    metas = read_json(work / "manifest.json")["partitions"]
    rec = _gather(work, metas, "exact.npy", "ex_off", shard, EXACT_DT)
    order = np.lexsort((rec["g"], rec["h1"], rec["h0"]))
    rec = rec[order]
    same = np.zeros(len(rec), dtype=bool)
    if len(rec) > 1:
        same[1:] = (rec["h0"][1:] == rec["h0"][:-1]) & (rec["h1"][1:] == rec["h1"][:-1])
    first = np.maximum.accumulate(np.where(~same, np.arange(len(rec)), 0)) if len(rec) else np.zeros(0, np.int64)
    out = np.empty(int(same.sum()), dtype=NONREP_DT)
    out["g"] = rec["g"][same]
    out["r"] = rec["g"][first[same]]
    out["s"] = rec["s"][first[same]]
    _save_npy(work / f"shuffle-exact-{shard:04d}.npy", out)
    return len(out)


MAX_PAIRS = 1 << 20  # candidate pairs verified at once by a band group-by task
MAX_ROWS = 1 << 17  # rows whose signatures it holds at once (x num_perm x 4 bytes: 64 MB at 128)


def _bucket_pairs(k: np.ndarray, g: np.ndarray, big: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """All (a < b) row pairs sharing a key; k, g sorted by (k, g)."""
    n = len(k)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = np.ones(n, dtype=bool)
    start[1:] = k[1:] != k[:-1]
    bid = np.cumsum(start) - 1
    sizes = np.bincount(bid)
    multi = sizes[bid] >= 2
    small = multi & (sizes[bid] <= big)
    A, B = [], []
    bs, gs = bid[small], g[small]
    if len(bs):
        for d in range(1, int(sizes[bid[small]].max())):
            m = bs[:-d] == bs[d:]
            if not m.any():
                break
            A.append(gs[:-d][m])
            B.append(gs[d:][m])
    for b in np.flatnonzero(sizes > big):
        members = g[bid == b]
        i, j = np.triu_indices(len(members), 1)
        A.append(members[i])
        B.append(members[j])
    if not A:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = np.concatenate(A), np.concatenate(B)
    keep = a != b
    return a[keep], b[keep]


def _dense_bucket_pairs(members: np.ndarray, max_pairs: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (a < b) pairs of one bucket too big for a batch, in blocks of about max_pairs: the pairs of rows
    i..e-1 with every later row."""
    n = len(members)
    i = 0
    while i < n - 1:
        rows = np.arange(i, n - 1)
        cnt = n - 1 - rows
        e = max(1, int(np.searchsorted(np.cumsum(cnt), max_pairs, side="right")))
        rows, cnt = rows[:e], cnt[:e]
        ai = np.repeat(rows, cnt)
        bj = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(rows + 1, cnt)
        a, b = members[ai], members[bj]
        keep = a != b
        yield a[keep], b[keep]
        i = int(rows[-1]) + 1


def _pair_batches(k: np.ndarray, g: np.ndarray, max_pairs: int = MAX_PAIRS,
                  max_rows: int = MAX_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The candidate pairs of buckets (k, g sorted by (k, g)) in batches of at most ~max_pairs pairs over at
    most ~max_rows rows, so a task's memory does not grow with the square of a dense bucket's size."""
    n = len(k)
    if n < 2:
        return
    start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    size = np.diff(np.r_[start, n])
    multi = size >= 2
    start, size = start[multi], size[multi]
    if not len(start):
        return
    pairs = size * (size - 1) // 2
    cost = np.maximum(pairs / max_pairs, size / max_rows)
    dense = cost > 1
    for s, z in zip(start[dense].tolist(), size[dense].tolist()):
        yield from _dense_bucket_pairs(np.unique(g[s:s + z]), max_pairs)
    start, size, cost = start[~dense], size[~dense], cost[~dense]
    batch = np.floor(np.cumsum(cost)).astype(np.int64)
    cuts = np.flatnonzero(np.r_[True, batch[1:] != batch[:-1], True])
    for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        s, e = int(start[lo]), int(start[hi - 1] + size[hi - 1])
        a, b = _bucket_pairs(k[s:e], g[s:e])
        if len(a):
            yield a, b


def _pack(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A row pair as one uint64 (row ids fit in 32 bits), so pairs sort and deduplicate as numbers."""
    return (a.astype(np.uint64) << np.uint64(32)) | b.astype(np.uint64)


def _verify(work: Path, metas: list[dict], a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
    """The distinct pairs among (a, b) and their estimated Jaccard similarities (share of equal MinHash values)."""
    pair = np.unique(_pack(a, b))
    a, b = (pair >> np.uint64(32)).astype(np.int64), (pair & np.uint64(0xFFFFFFFF)).astype(np.int64)
    del pair
    need = np.unique(np.concatenate([a, b]))
    sigs = _signatures(work, metas, need)
    ia, ib = np.searchsorted(need, a), np.searchsorted(need, b)
    sims = np.empty(len(a))
    step = 1 << 15
    for s in range(0, len(a), step):
        sims[s:s + step] = np.count_nonzero(sigs[ia[s:s + step]] == sigs[ib[s:s + step]], axis=1) / sigs.shape[1]
    return a, b, sims


def reduce_bands(work: str, shard: int, threshold: float) -> int:
    """Group-by LSH band key for one shard: candidate pairs of representatives, verified by estimated Jaccard,
    batch by batch (`_pair_batches`); a pair that shares several keys is written once."""
    work = Path(work)
    man = read_json(work / "manifest.json")
    metas = man["partitions"]
    rec = _gather(work, metas, "bands.npy", "bd_off", shard, BAND_DT)
    nonrep = load_npy(work / "nonrep.npy", mmap=True)
    if len(nonrep) and len(rec):
        pos = np.searchsorted(nonrep, rec["g"])
        hit = (pos < len(nonrep)) & (nonrep[np.minimum(pos, len(nonrep) - 1)] == rec["g"])
        rec = rec[~hit]
    rec = rec[np.lexsort((rec["g"], rec["k"]))]
    found = []
    for a, b in _pair_batches(rec["k"], rec["g"], MAX_PAIRS, MAX_ROWS):
        a, b, sims = _verify(work, metas, a, b)
        ok = sims >= threshold
        e = np.empty(int(ok.sum()), dtype=EDGE_DT)
        e["a"], e["b"], e["sim"] = a[ok], b[ok], sims[ok]
        found.append(e)
    del rec
    out = np.concatenate(found) if found else np.zeros(0, dtype=EDGE_DT)
    if len(found) > 1:  # the same pair from two batches (it shares two keys of this shard)
        _, first = np.unique(_pack(out["a"], out["b"]), return_index=True)
        out = out[np.sort(first)]
    _save_npy(work / f"shuffle-near-{shard:04d}.npy", out)
    return len(out)


def _signatures(work: Path, metas: list[dict], gids: np.ndarray) -> np.ndarray:
    starts = np.array([m["first_row"] for m in metas], dtype=np.int64)
    p = np.searchsorted(starts, gids, side="right") - 1
    out = None
    for pi in np.unique(p):
        m = metas[int(pi)]
        arr = load_npy(part_path(work, m["index"], "sig.npy"), mmap=True)
        sel = p == pi
        if out is None:
            out = np.zeros((len(gids), arr.shape[1]), dtype=np.uint32)
        out[sel] = arr[gids[sel] - m["first_row"]]
    return out


def resolve(nonrep: np.ndarray, edges: np.ndarray, exact: bool, near: bool) -> dict[int, tuple[int, str, float]]:
    """Duplicate row → (kept row, 'exact' or 'near', similarity), in file order as a sequential index decides:
    an exact copy of a kept row is its exact duplicate; otherwise the most similar earlier kept neighbour
    (ties: the earliest) makes a row a near duplicate; a row with none is kept."""
    adj: dict[int, list[tuple[int, float]]] = {}
    for a, b, sim in zip(edges["a"].tolist(), edges["b"].tolist(), edges["sim"].tolist()):
        adj.setdefault(a, []).append((b, sim))
        adj.setdefault(b, []).append((a, sim))
    rep_of = {g: (r, bool(s)) for g, r, s in zip(nonrep["g"].tolist(), nonrep["r"].tolist(), nonrep["s"].tolist())}
    dup: dict[int, tuple[int, str, float]] = {}
    for g in sorted(set(adj) | set(rep_of)):
        if g in rep_of:
            r, has_sig = rep_of[g]
            if exact and r not in dup:
                dup[g] = (r, "exact", 1.0)
                continue
            cands = ([(r, 1.0)] if near and has_sig else []) + adj.get(r, [])
        else:
            cands = adj[g]
        best = None
        for k, sim in cands:
            if k < g and k not in dup and (best is None or sim > best[1] or (sim == best[1] and k < best[0])):
                best = (k, sim)
        if best is not None:
            dup[g] = (best[0], "near", best[1])
    return dup
