"""Read items from a data spec (a file, a `save_to_disk` directory, a `hf:` dataset) or from records.

Every data flag and setting goes through [`load_items`][unlearn_lens.data.load_items]; an
in-memory collection (a list of items or of dicts, a `datasets.Dataset`) through
[`as_items`][unlearn_lens.data.as_items].
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from unlearn_lens.data.fields import DataError, FieldMap, record_item
from unlearn_lens.data.hf import is_hf_spec, load_hf_dataset
from unlearn_lens.data.items import Item

ITEM_SUFFIXES = (".jsonl", ".txt", ".json", ".csv", ".parquet")
"""File types `load_items` reads (besides `save_to_disk` directories and `hf:` datasets)."""


def items_from_records(
    records: Iterable[Mapping[str, Any]], fields: FieldMap = FieldMap(), source: str = "<records>"
) -> list[Item]:
    """Items from mappings, e.g. a list of dicts or a Hugging Face `datasets.Dataset`, read through `fields`.

    **Raises** `DataError` naming `source[index]` (0-based) and the field at fault, or `source`
    when there are no records.
    """
    items = [
        record_item(record, f"{source}[{index}]", fields) for index, record in enumerate(records)
    ]
    if not items:
        raise DataError(f"{source}: no items")
    return items


ItemsLike = Sequence[Item] | Iterable[Mapping[str, Any]]
"""What the library's functions accept as a set of items: `Item`s, or records such as the rows of
a `datasets.Dataset` (read through the default `FieldMap`)."""


def as_items(
    data: ItemsLike | str | Path, fields: FieldMap = FieldMap(), source: str = "<data>"
) -> list[Item]:
    """A list of items from what a caller hands the library: items, mappings (dicts, the rows of
    a `datasets.Dataset`), or a data spec for `load_items`.

    An empty collection gives an empty list. **Raises** `DataError` for a `DatasetDict` (a
    mapping of splits: pass one split) or records that do not read as items.
    """
    if isinstance(data, (str, Path)):
        return load_items(data, fields)
    if isinstance(data, Mapping):
        splits = ", ".join(repr(key) for key in data)
        raise DataError(
            f"{source}: got a mapping of {splits}, not a list of items; pass one split, e.g. "
            f"data[{next(iter(data), 'train')!r}]"
        )
    rows: list[Any] = list(data)  # a caller's rows: each is checked below or by record_item
    if all(isinstance(row, Item) for row in rows):
        return rows  # empty too: whether an empty set is allowed is the caller's call
    return items_from_records(rows, fields, source)


def check_spec(spec: str | Path) -> None:
    """Cheap checks of a data spec that need no reading: a `hf:` spec's form, or that a path exists
    with an accepted suffix (or is a directory). Lets a command fail before it loads a model."""
    if is_hf_spec(spec):
        from unlearn_lens.data.hf import parse_hf_spec

        parse_hf_spec(str(spec))
        return
    _check_path(Path(spec))


def _check_path(path: Path) -> None:
    if path.is_dir():
        return
    suffix = path.suffix.lower()
    if suffix not in ITEM_SUFFIXES:
        kind = f"type {path.suffix!r}" if path.suffix else "name without a suffix"
        raise DataError(
            f"{path}: unknown file {kind}; accepted: {', '.join(ITEM_SUFFIXES)}, "
            "a directory written by Dataset.save_to_disk, or hf:NAME[:CONFIG]:SPLIT"
        )
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")


def load_items(spec: str | Path, fields: FieldMap = FieldMap()) -> list[Item]:
    """Items from a data spec, read through `fields` (which record fields hold prompt, answer, text).

    - `hf:NAME[:CONFIG]:SPLIT`: a Hugging Face dataset (see
      [`load_hf_dataset`][unlearn_lens.data.load_hf_dataset]).
    - a directory written by `datasets.Dataset.save_to_disk`.
    - `.jsonl`: one JSON object a line (blank lines skipped); `.json`: one array of objects;
      `.csv`: a header row, then one item a row; `.parquet`: one item a row.
    - `.txt`: one text item a non-blank line (the line as written, without its line ending).

    Other fields of a record are ignored.

    **Raises** `DataError` in one line naming the file or spec, the line (`file:LINE`) or row
    (`file[ROW]`, 0-based) and the field: a missing file, an unknown suffix, unreadable
    content, a missing or non-string field, a data set of 0 rows, or no items at all. Whatever
    else a data library (`datasets`, pyarrow, csv, json) raises while reading is a `DataError`
    naming the spec too.
    """
    try:
        if is_hf_spec(spec):
            return items_from_records(_rows(load_hf_dataset(str(spec)), spec), fields, str(spec))
        path = Path(spec)
        _check_path(path)
        if path.is_dir():
            items = items_from_records(_rows(_disk_dataset(path), path), fields, str(path))
        elif path.suffix.lower() == ".parquet":
            items = items_from_records(_rows(_parquet_rows(path), path), fields, str(path))
        else:
            items = _text_file_items(path, _read_text(path), fields)
    except DataError:
        raise
    except Exception as error:  # the data libraries raise many types; none may become a traceback
        if isinstance(error, OSError) and error.filename is not None and error.strerror:
            raise  # the CLI prints it as `file: reason`
        raise DataError(
            f"{spec}: cannot read it ({type(error).__name__}: {_first_line(error)})"
        ) from None
    if not items:
        raise DataError(f"{path}: no items")
    return items


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


def _rows(rows: Any, source: str | Path) -> Any:
    """The rows of a data set (a `datasets.Dataset` or a list), refused by name when there are none."""
    if len(rows) == 0:
        raise DataError(f"{source}: the data set has 0 rows; give at least one item")
    return rows


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start})") from None


def _text_file_items(path: Path, text: str, fields: FieldMap) -> list[Item]:
    """Items of a `.jsonl`, `.json`, `.csv` or `.txt` file's text."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}:{error.lineno}: invalid JSON ({error.msg} at column {error.colno})"
            ) from None
        if not isinstance(records, list):
            raise DataError(
                f"{path}: expected a JSON array of objects, got a {type(records).__name__}"
            )
        return [
            record_item(record, f"{path}[{index}]", fields) for index, record in enumerate(records)
        ]
    if suffix == ".csv":
        return _csv_items(path, text, fields)
    # Split on newlines only: str.splitlines would also split inside JSON strings holding U+2028.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if suffix == ".jsonl":
        return _jsonl_items(path, lines, fields)
    return [Item(text=line) for line in lines if line.strip()]


def _jsonl_items(path: Path, lines: list[str], fields: FieldMap) -> list[Item]:
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}:{number}: invalid JSON ({error.msg} at column {error.colno})"
            ) from None
        items.append(record_item(record, f"{path}:{number}", fields))
    return items


def _csv_items(path: Path, text: str, fields: FieldMap) -> list[Item]:
    """One item a row after the header; errors name the row's line in the file (header = line 1)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    items = []
    try:
        for row in reader:
            if None in row:
                raise DataError(
                    f"{path}:{reader.line_num}: more cells than the header's {len(reader.fieldnames or [])} columns"
                )
            items.append(
                record_item(
                    {k: v for k, v in row.items() if v is not None},
                    f"{path}:{reader.line_num}",
                    fields,
                )
            )
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: invalid CSV ({error})") from None
    return items


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as error:
        raise DataError(
            f"{path}: not a readable Parquet file ({str(error).strip().splitlines()[0]})"
        ) from None


def _disk_dataset(path: Path) -> Any:
    """The `Dataset` that `save_to_disk` wrote to `path` (memory-mapped; nothing is written)."""
    import datasets

    if _saved_shards(path) == []:  # datasets cannot load a data set saved with no rows (IndexError)
        raise DataError(f"{path}: the data set has 0 rows; give at least one item")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            f"{path}: not a directory written by Dataset.save_to_disk ({first})"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        raise DataError(
            f"{path}: holds the splits {', '.join(splits)}; give one split's directory, e.g. {path / splits[0]}"
        )
    return loaded


def _saved_shards(path: Path) -> list[Any] | None:
    """The data files `save_to_disk` listed in `path/state.json` (an empty list for a data set of
    0 rows), or None when there is no readable list there."""
    try:
        shards = json.loads((path / "state.json").read_text(encoding="utf-8"))["_data_files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return shards if isinstance(shards, list) else None


def check_overlap(forget: Iterable[Item], retain: Iterable[Item]) -> int:
    """How many distinct items are in both sets (equal prompt, answer and text).

    An item in both is unlearned and protected at once; the caller decides how to warn.
    """
    return len(set(forget) & set(retain))
