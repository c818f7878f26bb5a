"""Annotation sheets (.xlsx, .csv) read by header name, with the header row found by content.

Releases differ in where the header row sits (SAMM has 13 description rows above it), in blank
columns (CASME II), in spacing and case of header names (`OnsetFrame` vs `Onset Frame`) and in
cell types (subject `1` vs `"01"`, frame `46` vs `46.0`). `read_table` hides all of that: a
header is matched by its normalised name (lower case, letters and digits only), and cells are
normalised by `cell_text` / `cell_int`.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ma2mi_jax.data.records import DataError

# How many rows from the top are searched for the header row.
HEADER_SEARCH_ROWS = 60
SHEET_HINT = "Is this the right annotation file (config key data.sheet)?"
SHEET_SUFFIXES = (".xlsx", ".xlsm", ".csv")


def header_key(name: Any) -> str:
    """Normalised header name: lower case, letters and digits only ("Onset Frame" -> "onsetframe")."""
    return re.sub(r"[^0-9a-z]", "", cell_text(name).lower())


def cell_text(value: Any) -> str:
    """A cell as stripped text; None -> "", integral floats without ".0" (46.0 -> "46")."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def cell_int(value: Any) -> int | None:
    """A cell as an integer frame/subject number; None for blank or "/" ; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(f"not a whole number: {value!r}")
    text = cell_text(value)
    if text in ("", "/", "-", "—", "nan", "NaN", "N/A", "n/a"):
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not number.is_integer():
        raise ValueError(f"not a whole number: {text!r}")
    return int(number)


@dataclasses.dataclass(frozen=True)
class Row:
    """One data row: its 1-based row number in the file and its cells keyed by `header_key`."""

    number: int
    cells: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.cells.get(header_key(key))

    def text(self, key: str) -> str:
        """The cell under header `key` as text."""
        return cell_text(self[key])


@dataclasses.dataclass(frozen=True)
class Table:
    """Rows of one sheet; `where(row)` names the file, sheet and row for messages."""

    path: str
    sheet: str
    header_row: int  # 1-based
    headers: tuple[str, ...]  # normalised; "" for blank header cells
    rows: tuple[Row, ...]

    def where(self, row: Row) -> str:
        """ "<file>[, sheet <name>], row <n>" for an error message."""
        sheet = f", sheet {self.sheet!r}" if self.sheet else ""
        return f"{self.path}{sheet}, row {row.number}"


def _xlsx_sheets(path: str) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    import openpyxl  # local: only needed for Excel files

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises many types for a broken file; the message names it
        raise DataError(
            f"cannot read the annotation sheet {path}: {type(err).__name__}: {err}. "
            "Check that it is an intact .xlsx file (re-save it from a spreadsheet program) "
            "or export it as .csv and point data.sheet at it."
        ) from None
    try:
        for ws in book.worksheets:
            yield ws.title, [tuple(r) for r in ws.iter_rows(values_only=True)]
    finally:
        book.close()


def _csv_rows(path: str) -> list[tuple[Any, ...]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return [tuple(r) for r in csv.reader(text.splitlines(), dialect)]


def _find_header(rows: Sequence[tuple[Any, ...]], required: Sequence[str]) -> int | None:
    want = {header_key(r) for r in required}
    for i, row in enumerate(rows[:HEADER_SEARCH_ROWS]):
        if want <= {header_key(c) for c in row}:
            return i
    return None


def _closest_header_row(
    rows: Sequence[tuple[Any, ...]], required: Sequence[str]
) -> tuple[int, list[str], list[str]] | None:
    """(row index, required headers it lacks, its other cells) of the row holding most (half or more)."""
    want = {header_key(r) for r in required}
    best = None
    for i, row in enumerate(rows[:HEADER_SEARCH_ROWS]):
        keys = {header_key(c) for c in row}
        found = len(want & keys)
        if 2 * found >= len(want) and (best is None or found > best[0]):
            missing = [r for r in required if header_key(r) not in keys]
            others = [cell_text(c) for c in row if cell_text(c) and header_key(c) not in want]
            best = (found, i, missing, others)
    return None if best is None else best[1:]


def _missing_headers_message(path: str, title: str, at: int, missing: list[str], others: list[str]) -> str:
    """Name each missing header, and the cell of the header row that looks like a renamed copy of it."""
    sheet = f", sheet {title!r}" if title else ""
    parts = []
    for name in missing:
        near = difflib.get_close_matches(header_key(name), [header_key(c) for c in others], n=1, cutoff=0.6)
        shown = next((c for c in others if near and header_key(c) == near[0]), None)
        parts.append(f"{name!r}" + (f" (is {shown!r} meant? rename it)" if shown else ""))
    return f"{path}{sheet}: the header row (row {at + 1}) has no column {', '.join(parts)}"


def _preview(rows: Sequence[tuple[Any, ...]]) -> str:
    for row in rows[:HEADER_SEARCH_ROWS]:
        cells = [cell_text(c) for c in row if cell_text(c)]
        if cells:
            return ", ".join(cells[:12])
    return "(no non-empty row)"


def read_table(path: str, required: Sequence[str], *, hint: str = SHEET_HINT) -> Table:
    """Read the first sheet of `path` that has a row holding every `required` header, by content.

    Raises DataError naming the file when it is missing, unreadable, old .xls, or has no such row;
    a row holding some of the headers is named with the missing ones. `hint` ends the messages
    (what the file is and which config key names it).
    """
    if not os.path.isfile(path):
        raise DataError(f"annotation sheet not found: {path}. {hint}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".xls":
        raise DataError(
            f"{path} is an old-format Excel file (.xls), which needs the xlrd package that is not "
            "installed. Open it in a spreadsheet program and save it as .xlsx (or .csv), then set "
            "data.sheet to the new file."
        )
    if suffix not in SHEET_SUFFIXES:
        raise DataError(f"{path}: unsupported sheet type {suffix!r}; use one of {list(SHEET_SUFFIXES)}")
    sheets: Iterable[tuple[str, list[tuple[Any, ...]]]]
    sheets = [("", _csv_rows(path))] if suffix == ".csv" else _xlsx_sheets(path)
    first_preview = None
    closest = None
    for title, rows in sheets:
        at = _find_header(rows, required)
        if first_preview is None:
            first_preview = _preview(rows)
        if at is None:
            near = _closest_header_row(rows, required)
            if near is not None and (closest is None or len(near[1]) < len(closest[2])):
                closest = (title, *near)
            continue
        headers = tuple(header_key(c) for c in rows[at])
        body = []
        for i, raw in enumerate(rows[at + 1 :], start=at + 2):
            if not any(cell_text(c) for c in raw):
                continue
            cells = {h: v for h, v in zip(headers, raw, strict=False) if h}
            body.append(Row(number=i, cells=cells))
        return Table(path=path, sheet=title, header_row=at + 1, headers=headers, rows=tuple(body))
    if closest is not None:
        raise DataError(_missing_headers_message(path, *closest) + f". {hint}")
    raise DataError(
        f"{path}: no row with the expected headers {list(required)} in the first {HEADER_SEARCH_ROWS} "
        f"rows of any sheet (first non-empty row reads: {first_preview}). {hint}"
    )


def find_sheet(root: str, sheet: str, patterns: Sequence[str], dataset: str) -> str:
    """Resolve `sheet` against `root`, or find exactly one file matching `patterns` in `root`.

    An old `.xls` with a re-saved `.xlsx`/`.csv` of the same name beside it is ignored.
    """
    import glob

    if sheet:
        path = sheet if os.path.isabs(sheet) else os.path.join(root, sheet)
        if not os.path.isfile(path):
            raise DataError(f"{dataset}: annotation sheet {path} not found (config key data.sheet).")
        return path
    found = sorted({p for pat in patterns for p in glob.glob(os.path.join(glob.escape(root), pat))})
    stems = {os.path.splitext(p)[0] for p in found if not p.lower().endswith(".xls")}
    found = [p for p in found if not (p.lower().endswith(".xls") and os.path.splitext(p)[0] in stems)]
    if not found:
        raise DataError(
            f"{dataset}: no annotation sheet in {root} (looked for {', '.join(patterns)}). "
            "Put the release's sheet there or name it with data.sheet."
        )
    if len(found) > 1:
        names = ", ".join(os.path.basename(p) for p in found)
        raise DataError(
            f"{dataset}: several annotation sheets in {root} ({names}); choose one with data.sheet."
        )
    return found[0]
