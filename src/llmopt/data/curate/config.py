"""The curate stage's typed blocks (pydantic only, so `llmopt validate` stays fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmopt.stages.base import Strict


class NormalizeConfig(Strict):
    """Each normalizer on/off; they run in this order: mojibake, html, mail, control, nfkc, whitespace, lowercase."""

    mojibake: bool = Field(True, description="repair mis-decoded UTF-8 (ftfy.fix_encoding)")
    html: bool = Field(True, description="strip HTML tags (script/style bodies too) and unescape entities")
    mail: bool = Field(True, description="drop leading mail headers, quoted '>' replies, 'On … wrote:' and forwarded tails")
    control: bool = Field(True, description="remove control characters (tab/newline kept), BOM, zero-width space, soft hyphen")
    nfkc: bool = Field(True, description="Unicode NFKC")
    whitespace: bool = Field(True, description="collapse runs of whitespace to one space, strip the ends")
    lowercase: bool = False


class LanguageConfig(Strict):
    """Drop rows langid places in another language; short rows are never judged (langid guesses on snippets)."""

    expected: list[str] | None = Field(None, description="ISO 639-1 codes, e.g. [en]; null: no language filter")
    min_chars: int = Field(60, ge=0, description="rows shorter than this are kept without a language check")
    min_confidence: float = Field(0.95, ge=0, le=1, description="drop only when langid's probability is at least this")


class FilterConfig(Strict):
    """Row filters on the normalized text; each dropped row names the first filter it failed."""

    min_chars: int = Field(1, ge=0)
    max_chars: int | None = Field(None, ge=1)
    min_words: int = Field(1, ge=0)
    max_words: int | None = Field(None, ge=1)
    min_alpha_ratio: float = Field(0.5, ge=0, le=1, description="share of letters among non-space characters")
    max_char_run: int | None = Field(10, ge=2, description="a character repeated this many times in a row is spam")
    max_word_run: int | None = Field(5, ge=2, description="a word repeated this many times in a row is spam")
    language: LanguageConfig = LanguageConfig()

    @model_validator(mode="after")
    def _possible_ranges(self) -> "FilterConfig":
        for unit in ("chars", "words"):
            lo, hi = getattr(self, f"min_{unit}"), getattr(self, f"max_{unit}")
            if hi is not None and lo > hi:
                raise ValueError(f"min_{unit} ({lo}) is greater than max_{unit} ({hi}): no row could pass; "
                                 f"lower min_{unit} or raise max_{unit}")
        return self


class DedupConfig(Strict):
    """Exact duplicates by a hash of the dedup key, near duplicates by MinHash + LSH (datasketch)."""

    exact: bool = True
    near: bool = True
    key: Literal["canonical", "normalized"] = Field(
        "canonical", description="canonical: lower-cased, punctuation removed, whitespace collapsed before hashing")
    unit: Literal["char", "word"] = Field("char", description="shingles of characters or of words")
    shingle: int = Field(5, ge=1, le=64, description="shingle size (characters or words)")
    num_perm: int = Field(128, ge=16, le=1024)
    threshold: float = Field(0.5, gt=0, lt=1, description="estimated Jaccard similarity at which rows are near "
                             "duplicates (0.5 as text-dedup; on SST-2 it finds 98% of one-word edits, 0.25% false drops)")
    seed: int = Field(1, description="seed of the MinHash permutations")
    keep: Literal["first"] = Field("first", description="the row kept per cluster: the first seen in file order")


class ExecutorConfig(Strict):
    """Where the partitions of curate/augment run. One implementation of the row logic; this only picks the engine."""

    kind: Literal["inprocess", "pool", "dask"] = Field(
        "inprocess", description="inprocess: this process, one partition after another; pool: a local process "
                                 "pool; dask: a Dask distributed cluster (pip install 'llmopt[scale]')")
    workers: int = Field(2, ge=1, le=1024, description="pool processes, or LocalCluster workers for address: local")
    address: str | None = Field(None, description="dask only: a scheduler address (tcp://host:8786) or 'local' "
                                                  "(a LocalCluster of `workers` single-threaded worker processes)")
    shards: int = Field(8, ge=1, le=4096, description="shuffle partitions of the exact-hash and LSH band group-bys "
                        "(a group-by task holds 1/shards of the keys: raise it for corpora of many GB)")
    retries: int = Field(2, ge=0, le=10, description="pool: times a partition whose worker died is run again "
                         "(dask: its scheduler's allowed-failures)")

    @model_validator(mode="after")
    def _address_iff_dask(self) -> "ExecutorConfig":
        if self.kind == "dask" and not self.address:
            raise ValueError("executor kind 'dask' needs an address: tcp://host:port of a running scheduler, "
                             "or 'local' for a LocalCluster on this machine")
        if self.kind != "dask" and self.address:
            raise ValueError(f"executor address is for kind 'dask' only (kind is '{self.kind}')")
        return self
