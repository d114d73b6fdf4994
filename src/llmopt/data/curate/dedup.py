"""Exact and near-duplicate detection: a hash of the dedup key, and MinHash signatures in an LSH index.

Signatures use datasketch's own permutations and scheme (affine32), computed for a whole batch of rows with
numpy (shingles hashed by a rolling polynomial, then one (shingles x num_perm) product and a min per row),
so `datasketch.MinHashLSH` indexes them as it would its own `MinHash` objects. Candidates from the index are
confirmed by the estimated Jaccard similarity (share of equal signature slots) >= threshold.

Memory: the index holds, per kept row, its signature (num_perm x 4 bytes) and one bucket entry per LSH band
(datasketch's dict storage: ~300 bytes each), plus the exact key; rows themselves stay on disk.
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

    def signatures(self, keys: Sequence[str], batch_shingles: int = 16_384) -> list[np.ndarray | None]:
        """One uint32 signature per key (None for a key without shingles)."""
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

    def lean(self, sig: np.ndarray) -> "_Sketch":
        return _Sketch(sig, self.scheme)


class _Sketch:
    """What MinHashLSH reads of a MinHash (hashvalues, scheme, len): building a LeanMinHash per row costs more
    than the index lookup itself."""

    __slots__ = ("hashvalues", "scheme")

    def __init__(self, hashvalues: np.ndarray, scheme: str):
        self.hashvalues, self.scheme = hashvalues, scheme

    def __len__(self) -> int:
        return len(self.hashvalues)


class NearIndex:
    """MinHashLSH over signatures added under integer keys; `best` returns the most similar added row."""

    def __init__(self, hasher: MinHasher, threshold: float):
        from datasketch import MinHashLSH

        self.hasher, self.threshold = hasher, threshold
        # bands tuned to miss fewer true pairs (the estimated Jaccard check below keeps precision)
        self.lsh = MinHashLSH(threshold=threshold, num_perm=hasher.cfg.num_perm, weights=LSH_WEIGHTS)
        self.bands = self.lsh.b
        self._sigs = np.zeros((1024, hasher.cfg.num_perm), dtype=np.uint32)

    def add(self, key: int, sig: np.ndarray) -> None:
        while key >= len(self._sigs):
            self._sigs = np.concatenate([self._sigs, np.zeros_like(self._sigs)])
        self._sigs[key] = sig
        self.lsh.insert(key, self.hasher.lean(sig), check_duplication=False)

    def best(self, sig: np.ndarray) -> tuple[int, float] | None:
        """(key, estimated Jaccard) of the most similar added row at or above the threshold; ties: lowest key."""
        cands = self.lsh.query(self.hasher.lean(sig))
        if not cands:
            return None
        idx = np.array(sorted(cands))
        sims = (self._sigs[idx] == sig[None, :]).mean(axis=1)
        j = int(np.argmax(sims))
        return (int(idx[j]), float(sims[j])) if sims[j] >= self.threshold else None
