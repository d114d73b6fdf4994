"""Data files with exactly one thing wrong: a valid table written as Parquet, CSV, TSV or JSONL, then mutated.

Each mutation says where the error must point (file, line or row), or that the result is in fact
legal and must load with every row. Cases cycle through the mutations with a seeded RNG.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmopt.testing.bad_inputs import Case, dump_yaml

FORMATS = ("parquet", "csv", "tsv", "jsonl")
TEXT, TYPED, DELIMITED = ("csv", "tsv", "jsonl"), ("parquet", "jsonl"), ("csv", "tsv")
WORDS = "a great film dull mess wonderful acting boring long loved hated funny warm story plot".split()


@dataclass
class Table:
    text: str  # column names the recipe asks for
    label: str
    rows: list[dict]
    header: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.header = self.header or [self.text, self.label]

    def rename(self, old: str, new: str) -> Table:
        return Table(self.text, self.label, [{(new if k == old else k): v for k, v in r.items()} for r in self.rows],
                     [new if h == old else h for h in self.header])


def _table(rng: random.Random) -> Table:
    classes = rng.choice([["pos", "neg"], ["ham", "spam", "eggs"], [0, 1]])
    text, label = rng.choice(["text", "sentence", "review"]), rng.choice(["label", "category", "y"])
    rows = [{text: " ".join(rng.choices(WORDS, k=rng.randint(2, 8))) + f" {i}", label: classes[i % len(classes)]}
            for i in range(rng.randint(30, 60))]
    return Table(text, label, rows)


def _lines(fmt: str, t: Table, sep: str | None = None) -> list[str]:
    """The file's lines for csv/tsv/jsonl (a quoted field may hold a newline)."""
    if fmt == "jsonl":
        return [json.dumps(r, ensure_ascii=False) for r in t.rows]
    out = io.StringIO()
    w = csv.writer(out, delimiter=sep or ("\t" if fmt == "tsv" else ","), lineterminator="\n")
    w.writerow(t.header)
    w.writerows([r.get(h) for h in t.header] for r in t.rows)
    return out.getvalue().split("\n")[:-1]


def _write(p: Path, fmt: str, t: Table, types: dict | None = None, **parquet_options: Any) -> None:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {h: pa.array([r.get(h) for r in t.rows], type=(types or {}).get(h)) for h in t.header}
        pq.write_table(pa.table(cols), p, **parquet_options)
    else:
        p.write_text("".join(line + "\n" for line in _lines(fmt, t)), encoding="utf-8")


def _at(fmt: str, p: Path, i: int) -> str:
    """How an error names data row i (0-based) of file p."""
    return f"{p} row {i + 1}" if fmt == "parquet" else f"{p}:{i + (1 if fmt == 'jsonl' else 2)}"


def _set(fmt: str, t: Table, rng: random.Random, col: str, change: Callable[[Any], Any]) -> int:
    """Change `col` in one random row, in every row for Parquet (one type per column); return the row to blame."""
    k = rng.randrange(len(t.rows))
    for i in range(len(t.rows)) if fmt == "parquet" else [k]:
        t.rows[i][col] = change(t.rows[i][col])
    return 0 if fmt == "parquet" else k


Mutation = Callable[[str, Table, random.Random, Path], tuple[str | None, dict]]
DATA_MUTATIONS: dict[str, tuple[tuple[str, ...], Mutation]] = {}


def _mutation(*formats: str) -> Callable[[Mutation], Mutation]:
    """Register a mutation: (fmt, table, rng, path) -> (where the error must point, or None if legal; source)."""
    def add(fn: Mutation) -> Mutation:
        DATA_MUTATIONS[fn.__name__.lstrip("_")] = (formats or FORMATS, fn)
        return fn
    return add


def _one_row(col: str, value: Any) -> Mutation:
    def mutate(fmt, t, rng, p):
        k = rng.randrange(len(t.rows))
        if fmt == "parquet" and value == "":  # "" beside integer labels: make them all text
            t.rows = [{**r, t.label: str(r[t.label])} for r in t.rows]
        t.rows[k][getattr(t, col)] = value
        _write(p, fmt, t)
        return _at(fmt, p, k), {"path": p}
    return mutate


for _name, _col, _value in (("null_text", "text", None), ("null_label", "label", None),
                            ("whitespace_text", "text", "  \t "), ("empty_label", "label", "")):
    DATA_MUTATIONS[_name] = (FORMATS, _one_row(_col, _value))


@_mutation()
def _missing_text_column(fmt, t, rng, p):
    _write(p, fmt, Table(t.text, t.label, [{t.label: r[t.label]} for r in t.rows], [t.label]))
    return _at(fmt, p, 0), {"path": p}


@_mutation()
def _renamed_label_column(fmt, t, rng, p):
    _write(p, fmt, t.rename(t.label, rng.choice(["labels", t.label.upper(), "class"])))
    return _at(fmt, p, 0), {"path": p}


@_mutation()
def _numeric_text(fmt, t, rng, p):  # legal in CSV/TSV, where every field is text
    k = _set(fmt, t, rng, t.text, lambda _: rng.randint(0, 10**6))
    _write(p, fmt, t)
    return (None if fmt in DELIMITED else _at(fmt, p, k)), {"path": p}


def _typed(col: str, change: Callable[[Any], Any]) -> Mutation:
    def mutate(fmt, t, rng, p):
        k = _set(fmt, t, rng, getattr(t, col), change)
        _write(p, fmt, t)
        return _at(fmt, p, k), {"path": p}
    return mutate


for _name, _col, _change in (("list_label", "label", lambda v: [v]), ("bool_label", "label", lambda v: v == 0),
                             ("nested_text", "text", lambda v: {"en": v})):
    DATA_MUTATIONS[_name] = (TYPED, _typed(_col, _change))


@_mutation(*TYPED)
def _float_label(fmt, t, rng, p):
    if fmt == "parquet":  # one float column: every class as a number
        classes = sorted({str(r[t.label]) for r in t.rows})
        t.rows = [{**r, t.label: float(classes.index(str(r[t.label])))} for r in t.rows]
    k = rng.randrange(len(t.rows))
    t.rows[k][t.label] = 0.5
    _write(p, fmt, t)
    return _at(fmt, p, k), {"path": p}


@_mutation("jsonl")
def _mixed_label_types(fmt, t, rng, p):  # int among strings, or "1" among ints
    k = rng.randrange(1, len(t.rows))
    v = t.rows[k][t.label]
    t.rows[k][t.label] = str(v) if isinstance(v, int) else rng.randint(0, 9)
    _write(p, fmt, t)
    return _at(fmt, p, k), {"path": p}


@_mutation()
def _one_class(fmt, t, rng, p):
    t.rows = [{**r, t.label: t.rows[0][t.label]} for r in t.rows]
    _write(p, fmt, t)
    return str(p), {"path": p}


@_mutation()
def _too_few_rows(fmt, t, rng, p):  # too few to carve dev and test out of train
    t.rows = t.rows[:3]
    _write(p, fmt, t)
    return str(p), {"path": p}


@_mutation()
def _empty_split(fmt, t, rng, p):
    dev = p.with_name(f"dev.{fmt}")
    _write(p, fmt, t)
    _write(dev, fmt, Table(t.text, t.label, [], t.header), types={h: _arrow_type(t, h) for h in t.header})
    return str(dev), {"train": p, "dev": dev}


def _arrow_type(t: Table, col: str) -> Any:
    import pyarrow as pa

    return pa.array([r[col] for r in t.rows]).type


@_mutation()
def _unseen_dev_label(fmt, t, rng, p):
    dev = p.with_name(f"dev.{fmt}")
    _write(p, fmt, t)
    rows = [dict(r) for r in t.rows[:5]]
    k = rng.randrange(len(rows))
    rows[k][t.label] = 99 if isinstance(rows[k][t.label], int) else "other"
    _write(dev, fmt, Table(t.text, t.label, rows, t.header))
    return _at(fmt, dev, k), {"train": p, "dev": dev}


@_mutation()
def _latin1(fmt, t, rng, p):
    k = rng.randrange(len(t.rows))
    t.rows[k][t.text] = f"caf\u00e9 cr\u00e8me {k}"
    if fmt == "parquet":  # Parquet strings are UTF-8: Latin-1 bytes can only sit in a binary column
        import pyarrow as pa

        t.rows = [{**r, t.text: r[t.text].encode("latin-1")} for r in t.rows]
        _write(p, fmt, t, types={t.text: pa.binary()})
        return _at(fmt, p, 0), {"path": p}
    p.write_bytes("".join(line + "\n" for line in _lines(fmt, t)).encode("latin-1"))
    return _at(fmt, p, k), {"path": p}


def _edit_line(edit: Callable[[list[str], int, str], None], legal: bool = False) -> Mutation:
    """Edit the text at data row k (k >= 1); unless `legal`, the error must point at that row."""
    def mutate(fmt, t, rng, p):
        lines = _lines(fmt, t)
        k = rng.randrange(1, len(t.rows))
        edit(lines, k + (0 if fmt == "jsonl" else 1), "\t" if fmt == "tsv" else ",")
        p.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return (None if legal else _at(fmt, p, k)), {"path": p}
    return mutate


def _dup_header(lines: list[str], i: int, sep: str) -> None:
    lines.insert(i, lines[0])


def _unquoted_sep(lines: list[str], i: int, sep: str) -> None:
    lines[i] = lines[i].replace(" ", sep, 1)


def _stray_quote(lines: list[str], i: int, sep: str) -> None:
    lines[i] = '"' + lines[i]


def _cut_json(lines: list[str], i: int, sep: str) -> None:
    lines[i] = lines[i][: len(lines[i]) // 2]


def _blank_lines(lines: list[str], i: int, sep: str) -> None:
    lines[i:i] = ["", ""]
    lines.insert(0, "")  # before the header too


DATA_MUTATIONS.update({
    "duplicated_header": (DELIMITED, _edit_line(_dup_header)),
    "unquoted_delimiter": (DELIMITED, _edit_line(_unquoted_sep)),
    "stray_quote": (DELIMITED, _edit_line(_stray_quote)),
    "bad_json_line": (("jsonl",), _edit_line(_cut_json)),
    "blank_lines": (TEXT, _edit_line(_blank_lines, legal=True)),
})


@_mutation(*DELIMITED)
def _wrong_delimiter(fmt, t, rng, p):
    sep = rng.choice([";", "|"] + (["\t"] if fmt == "csv" else [","]))
    p.write_text("".join(line + "\n" for line in _lines(fmt, t, sep)), encoding="utf-8")
    return str(p), {"path": p}


@_mutation()
def _wrong_format(fmt, t, rng, p):  # Parquet bytes under a text name, CSV text under a Parquet name
    tmp = p.with_name("other." + ("csv" if fmt == "parquet" else "parquet"))
    _write(tmp, tmp.suffix[1:], t)
    tmp.replace(p)
    return str(p), {"path": p}


@_mutation("parquet")
def _truncated(fmt, t, rng, p):
    _write(p, fmt, t)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * rng.uniform(0.2, 0.9))])
    return str(p), {"path": p}


# legal inputs: each must load with every row


@_mutation(*TEXT)
def _bom(fmt, t, rng, p):
    p.write_bytes(b"\xef\xbb\xbf" + "".join(line + "\n" for line in _lines(fmt, t)).encode())
    return None, {"path": p}


@_mutation()
def _big_row(fmt, t, rng, p):
    t.rows[rng.randrange(len(t.rows))][t.text] = "word " * 200_000 + "end"
    _write(p, fmt, t)
    return None, {"path": p}


@_mutation(*TEXT)
def _line_endings(fmt, t, rng, p):
    eol = rng.choice(["\r\n", "\r"])
    p.write_bytes((eol.join(_lines(fmt, t)) + rng.choice([eol, ""])).encode())
    return None, {"path": p}


@_mutation()
def _extra_column(fmt, t, rng, p):
    t.header.insert(rng.randrange(3), "id")
    t.rows = [{**r, "id": i} for i, r in enumerate(t.rows)]
    _write(p, fmt, t)
    return None, {"path": p}


@_mutation()
def _compressed(fmt, t, rng, p):
    if fmt == "parquet":
        _write(p, fmt, t, compression=rng.choice(["gzip", "zstd", "brotli", "snappy", "none"]))
        return None, {"path": p}
    _write(p, fmt, t)
    gz = p.with_name(p.name + ".gz")
    gz.write_bytes(gzip.compress(p.read_bytes()))
    return None, {"path": gz}


@_mutation()
def _tricky_text(fmt, t, rng, p):  # quotes, separators, a newline and non-Latin scripts, properly quoted
    t.rows[rng.randrange(len(t.rows))][t.text] = 'he said "no", then\tleft;\nnext line 🎬 Ünïcödé 中文 עברית'
    _write(p, fmt, t)
    return None, {"path": p}


@_mutation("parquet")
def _arrow_types(fmt, t, rng, p):  # dictionary-encoded / large strings, small ints, many row groups
    import pyarrow as pa

    label = pa.int8() if isinstance(t.rows[0][t.label], int) else pa.dictionary(pa.int32(), pa.string())
    text = rng.choice([pa.large_string(), pa.dictionary(pa.int32(), pa.string())])
    _write(p, fmt, t, types={t.text: text, t.label: label}, row_group_size=7)
    return None, {"path": p}


def data_cases(root: Path, per_format: int | None = None, seed: int = 0) -> list[Case]:
    """Cases for every format, cycling through its mutations (per_format None: each mutation once)."""
    rng = random.Random(seed)
    cases = []
    for fmt in FORMATS:
        kinds = [k for k, (fmts, _) in DATA_MUTATIONS.items() if fmt in fmts]
        for i in range(per_format or len(kinds)):
            kind, folder = kinds[i % len(kinds)], Path(root) / fmt / str(i)
            folder.mkdir(parents=True)
            t = _table(rng)
            n = len(t.rows)
            where, source = DATA_MUTATIONS[kind][1](fmt, t, rng, folder / f"train.{fmt}")
            source = {**{k: str(v) for k, v in source.items()}, "text_column": t.text, "label_column": t.label}
            recipe = folder / "recipe.yaml"
            raw = {"version": 1, "name": "bad-data", "seed": 1, "stages": [{"id": "data", "type": "data", "source": source}]}
            recipe.write_text(dump_yaml(raw), encoding="utf-8")
            expect = () if where is None else (re.escape(where) + r"(?![\w.])",)
            cases.append(Case(fmt, kind, recipe, expect, n if where is None else None))
    return cases


