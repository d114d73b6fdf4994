"""Exact and near-duplicate detection: a hash of the dedup key, and MinHash signatures in an LSH index.

Signatures use datasketch's own permutations and scheme (affine32), computed for a whole batch of rows with
numpy (shingles hashed by a rolling polynomial, then one (num_perm x shingles) product and a min per row): the
same values datasketch's MinHash gives for the same shingle hashes. The LSH bands and rows are datasketch's
choice for (threshold, num_perm, weights); the buckets are `CompactLSH`'s sorted arrays rather than
MinHashLSH's dict of sets (12 instead of ~300 bytes per band entry: what bounds memory on a large corpus).
Candidates are confirmed by the estimated Jaccard similarity (share of equal signature slots) >= threshold.

Memory: per kept row its signature (num_perm x 4 bytes), one 12-byte entry per band, the exact key, id and
label; rows themselves stay on disk.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Sequence

import numpy as np

from llmopt.data.curate.config import DedupConfig

_PUNCT_WS = re.compile(r"[\W_]+", re.UNICODE)
_P = np.uint64(1_000_003)
SIGNATURE_BATCH_SHINGLES = 16_384  # shingles per (num_perm x shingles) block: a fixed buffer, ~3 x 4 x num_perm x it bytes
LSH_WEIGHTS = (0.2, 0.8)  # (false positive, false negative) weights of datasketch's band/row optimisation


def canonical(text: str) -> str:
    """Lower-cased, punctuation and symbols removed, whitespace collapsed: 'A Film!' and 'a film' share it."""
    return _PUNCT_WS.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def dedup_key(text: str, cfg: DedupConfig) -> str:
    return canonical(text) if cfg.key == "canonical" else text


def exact_hash(key: str) -> str:
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()


def shingle_hashes(key: str, unit: str, k: int) -> np.ndarray:
    """The distinct 32-bit hashes of the key's k-shingles (characters or words); a key shorter than k is one shingle."""
    if unit == "char":
        codes = np.frombuffer(key.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    else:
        codes = np.array([zlib.crc32(w.encode("utf-8")) for w in key.split()], dtype=np.uint64)
    if len(codes) == 0:
        return np.zeros(0, dtype=np.uint32)
    k = min(k, len(codes))
    windows = np.lib.stride_tricks.sliding_window_view(codes, k)
    powers = _P ** np.arange(k - 1, -1, -1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (windows * powers).sum(axis=1, dtype=np.uint64) + np.uint64(k)
    return np.unique(((h ^ (h >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer (as datasketch applies before its affine32 permutations)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class MinHasher:
    """Batch MinHash signatures with datasketch's permutations for (num_perm, seed)."""

    def __init__(self, cfg: DedupConfig):
        from datasketch import MinHash

        proto = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        self.scheme, self.seed = proto.scheme, cfg.seed
        self.a, self.b = (np.asarray(x, dtype=np.uint32) for x in proto.permutations)
        self.cfg = cfg

    def signatures(self, keys: Sequence[str], batch_shingles: int | None = None) -> list[np.ndarray | None]:
        """One uint32 signature per key (None for a key without shingles)."""
        batch_shingles = batch_shingles or SIGNATURE_BATCH_SHINGLES
        out: list[np.ndarray | None] = [None] * len(keys)
        pending: list[tuple[int, np.ndarray]] = []
        size = 0
        for i, key in enumerate(keys):
            sh = shingle_hashes(key, self.cfg.unit, self.cfg.shingle)
            if len(sh):
                pending.append((i, sh))
                size += len(sh)
            if size >= batch_shingles:  # a (num_perm x shingles) block that stays in the CPU cache
                self._flush(pending, out)
                pending, size = [], 0
        self._flush(pending, out)
        return out

    def _flush(self, pending: list[tuple[int, np.ndarray]], out: list) -> None:
        if not pending:
            return
        allh = _fmix32(np.concatenate([sh for _, sh in pending]))
        starts = np.cumsum([0] + [len(sh) for _, sh in pending[:-1]])
        with np.errstate(over="ignore"):
            permuted = self.a[:, None] * allh[None, :] + self.b[:, None]
        # min over each row's contiguous run of shingles (reduceat along the last axis is the fast one)
        sigs = np.ascontiguousarray(np.minimum.reduceat(permuted, starts, axis=1).T)
        for (i, _), sig in zip(pending, sigs):
            out[i] = sig

class CompactLSH:
    """Banded LSH with datasketch's band/row choice (`_optimal_param`) whose buckets are sorted numpy runs: 12
    bytes per band entry (uint64 band hash + int32 key) where MinHashLSH's dict-of-sets storage takes ~300.

    Inserts go to a small dict buffer; every `buffer_rows` rows it becomes a sorted run, and runs of similar size
    are merged (log-structured), so a query is a dict lookup plus one searchsorted per run. A band hash is a
    multiply-add hash of the band's r values; a rare collision only adds a candidate, which the estimated
    Jaccard check in NearIndex then rejects."""

    def __init__(self, threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5),
                 buffer_rows: int = 2048):
        from datasketch.lsh import _optimal_param

        self.b, self.r = _optimal_param(threshold, num_perm, *weights)
        rng = np.random.RandomState(20231)
        self.mult = rng.randint(1, 2**62, size=self.r, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
        self.salt = rng.randint(0, 2**62, size=self.b, dtype=np.int64).astype(np.uint64)
        self.buffer_rows = buffer_rows
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._buf: dict[int, list[int]] = {}
        self._buf_h: list[np.ndarray] = []
        self._buf_k: list[int] = []

    def band_hashes(self, sig: np.ndarray) -> np.ndarray:
        bands = sig[: self.b * self.r].reshape(self.b, self.r).astype(np.uint64)
        with np.errstate(over="ignore"):
            return (bands * self.mult[None, :]).sum(axis=1, dtype=np.uint64) ^ self.salt

    def band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """`band_hashes` of many signatures at once: (rows, b) uint64."""
        bands = sigs[:, : self.b * self.r].reshape(len(sigs), self.b, self.r).astype(np.uint64)
        with np.errstate(over="ignore"):
            return (bands * self.mult[None, None, :]).sum(axis=2, dtype=np.uint64) ^ self.salt[None, :]

    def insert(self, key: int, sig: np.ndarray) -> None:
        h = self.band_hashes(sig)
        for x in h.tolist():
            self._buf.setdefault(x, []).append(key)
        self._buf_h.append(h)
        self._buf_k.append(key)
        if len(self._buf_k) >= self.buffer_rows:
            self._flush()

    def _flush(self) -> None:
        hs = np.concatenate(self._buf_h)
        ks = np.repeat(np.asarray(self._buf_k, dtype=np.int32), self.b)
        order = np.argsort(hs, kind="stable")
        self.runs.append((hs[order], ks[order]))
        self._buf, self._buf_h, self._buf_k = {}, [], []
        while len(self.runs) >= 2 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (h1, k1), (h2, k2) = self.runs.pop(-2), self.runs.pop()
            hs, ks = np.concatenate([h1, h2]), np.concatenate([k1, k2])
            order = np.argsort(hs, kind="stable")
            self.runs.append((hs[order], ks[order]))

    def query(self, sig: np.ndarray) -> set[int]:
        h = self.band_hashes(sig)
        found: set[int] = set()
        for x in h.tolist():
            if x in self._buf:
                found.update(self._buf[x])
        for hs, ks in self.runs:
            lo, hi = np.searchsorted(hs, h, "left"), np.searchsorted(hs, h, "right")
            for a, b in zip(lo[hi > lo].tolist(), hi[hi > lo].tolist()):
                found.update(ks[a:b].tolist())
        return found

    def nbytes(self) -> int:
        return sum(h.nbytes + k.nbytes for h, k in self.runs) + len(self._buf_k) * self.b * 100


class NearIndex:
    """An LSH index over signatures added under integer keys; `best` returns the most similar added row."""

    def __init__(self, hasher: MinHasher, threshold: float):
        self.hasher, self.threshold = hasher, threshold
        # bands tuned to miss fewer true pairs (the estimated Jaccard check below keeps precision)
        self.lsh = CompactLSH(threshold, hasher.cfg.num_perm, LSH_WEIGHTS)
        self.bands = self.lsh.b
        self._sigs = np.zeros((1024, hasher.cfg.num_perm), dtype=np.uint32)

    def add(self, key: int, sig: np.ndarray) -> None:
        while key >= len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.zeros_like(self._sigs)])
        self._sigs[key] = sig
        self.lsh.insert(key, sig)

    def best(self, sig: np.ndarray) -> tuple[int, float] | None:
        """(key, estimated Jaccard) of the most similar added row at or above the threshold; ties: lowest key."""
        cands = self.lsh.query(sig)
        if not cands:
            return None
        idx = np.array(sorted(cands))
        sims = (self._sigs[idx] == sig[None, :]).mean(axis=1)
        j = int(np.argmax(sims))
        return (int(idx[j]), float(sims[j])) if sims[j] >= self.threshold else None
