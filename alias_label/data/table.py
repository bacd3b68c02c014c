"""Reading, validating and cleaning a (qid, label, alias) table.

Schema (one row per (qid, alias); an entity with no alias keeps one row with an empty alias):
    qid, label, alias, description (optional), website (optional)
"""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path

import pandas as pd

from alias_label.data.text import has_invisible_marks, is_nfc, normalise_space
from alias_label.errors import UserError
from alias_label.paths import paths

SCHEMA = ("qid", "label", "alias", "description", "website")
_URL = re.compile(r"https?://|www\.", re.IGNORECASE)
MAX_ALIAS_ENTITIES = 5


def add_encoding_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of a CSV/TSV input, e.g. latin-1 or cp1252 (default: utf-8)")


def csv_separator(path: Path, encoding: str) -> str:
    """The field separator of a .csv file, read from its header: a comma, or else the semicolon or tab
    that spreadsheets in many locales write instead (a one-column file has none of them)."""
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        header = handle.readline()
    return next((separator for separator in (",", ";", "\t") if separator in header), ",")


# What a file read by ``read_table`` holds: what it is called, the flag that names it, what a row is.
FILE_KINDS = {"data": ("data file", "--data", "(qid, label, alias) row"),
              "queries": ("query file", "--batch", "row of queries")}


def read_table(path: Path, encoding: str = "utf-8", keep_blank_lines: bool = False, kind: str = "data"
               ) -> pd.DataFrame:
    """A parquet, CSV (comma-, semicolon- or tab-separated), TSV or Excel (.xlsx, its first sheet)
    file as a table of text; every problem with it is a UserError, worded for ``kind`` (a
    ``FILE_KINDS`` key).

    ``keep_blank_lines`` keeps an empty line of a CSV as a row of missing values, so a one-column
    query file keeps the position of every row.
    """
    path = Path(path)
    name, flag, row = FILE_KINDS[kind]
    if not path.exists():
        hint = (" Build the default data with: python scripts/prepare_data.py"
                if path == paths().default_data else f" Check the {flag} path.")
        raise UserError(f"{name} not found: {path}.{hint}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv"):
            table = pd.read_csv(path, sep="\t" if suffix == ".tsv" else csv_separator(path, encoding), dtype=object,
                                keep_default_na=False, na_values=[""], encoding=encoding,
                                skip_blank_lines=not keep_blank_lines)
        elif suffix == ".xlsx":
            table = pd.read_excel(path, dtype=object, engine="openpyxl")  # the first sheet
        else:
            raise UserError(f"{path}: unsupported file type {suffix!r}; use .parquet, .csv, .tsv or .xlsx (save an "
                            "older spreadsheet as .xlsx or CSV)")
    except pd.errors.EmptyDataError:
        raise UserError(f"{path} is empty: it needs a header row and at least one {row}") from None
    except UnicodeDecodeError as err:
        bad = err.object[err.start:err.start + 1]
        raise UserError(f"{path} is not valid {encoding} text (byte {err.start} is {bad!r}). Re-save it as UTF-8, "
                        "or name its encoding with --encoding, e.g. --encoding latin-1") from None
    except LookupError:
        raise UserError(f"--encoding {encoding!r} is not a text encoding Python knows; try utf-8, latin-1 or cp1252"
                        ) from None
    except (pd.errors.ParserError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"cannot read {path} as {suffix[1:]}: {err}. Check that the file is complete and of that "
                        "type") from None
    if table.empty:
        raise UserError(f"{path} is empty: it needs at least one {row}")
    return table


def rename_columns(table: pd.DataFrame, qid_col: str, label_col: str, alias_col: str, source: str) -> pd.DataFrame:
    wanted = {qid_col: "qid", label_col: "label", alias_col: "alias"}
    missing = [col for col in wanted if col not in table.columns]
    if missing:
        raise UserError(
            f"{source}: missing column(s) {missing}. Found columns: {list(table.columns)}. "
            f"Expected {list(wanted)}; map yours with --qid-col, --label-col and --alias-col.")
    table = table.rename(columns=wanted)
    for optional in ("description", "website"):
        if optional not in table.columns:
            table[optional] = ""
    return table[list(SCHEMA)]


def _check_strings(table: pd.DataFrame, column: str, source: str) -> None:
    values = table[column]
    bad = values[values.notna() & ~values.map(lambda v: isinstance(v, str))]
    if len(bad):
        examples = ", ".join(f"row {i}: {v!r}" for i, v in bad.head(3).items())
        raise UserError(f"{source}: column {column!r} has {len(bad)} non-text value(s) ({examples}). "
                        f"Convert them to text, or blank them, and run again.")


def format_report(report: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in report.items() if value) or "nothing dropped"


def check_max_alias_entities(max_alias_entities: int) -> None:
    if max_alias_entities < 1:
        raise UserError(f"--max-alias-entities {max_alias_entities} must be at least 1")


def id_text(ids: pd.Series) -> pd.Series:
    """Ids as text: numeric ids (Wikidata numbers, database keys) are ids all the same. A column of
    whole-number ids with a gap comes as floats, as pandas stores a missing integer; its ids are
    written as the integers they are (101, not 101.0), so that lookups join back to their table."""
    if pd.api.types.is_float_dtype(ids) and ids.dropna().map(float.is_integer).all():
        ids = ids.astype("Int64")
    return ids.map(lambda v: normalise_space(str(v)) if pd.notna(v) else "")


def clean_table(table: pd.DataFrame, source: str = "data",
                max_alias_entities: int = MAX_ALIAS_ENTITIES) -> tuple[pd.DataFrame, dict]:
    """Normalise whitespace, drop what cannot be used and count every drop.

    Besides blanks and repeats, two kinds of alias are not names of their entity and are dropped:
    web addresses, and strings shared by more than ``max_alias_entities`` entities.
    """
    check_max_alias_entities(max_alias_entities)
    _check_strings(table, "label", source)
    _check_strings(table, "alias", source)
    table = table.copy()
    table["qid"] = id_text(table["qid"])
    for column in ("label", "alias", "description", "website"):
        table[column] = table[column].map(lambda v: normalise_space(str(v)) if pd.notna(v) else "")
    report = {"rows_in": len(table)}
    # Counted, not changed: the data is read as written, and lookups read a query so too
    # (docs/search-and-abstain.md, "How a query is read").
    for column, plural in (("label", "labels"), ("alias", "aliases")):
        names = pd.Series(table[column].unique())
        report[f"{plural}_with_invisible_marks"] = int(names.map(has_invisible_marks).sum())
        report[f"{plural}_not_nfc"] = int((~names.map(is_nfc)).sum())

    blank_qid = table["qid"] == ""
    report["dropped_blank_qid"] = int(blank_qid.sum())
    blank_label = table["label"] == ""
    report["dropped_blank_label"] = int((blank_label & ~blank_qid).sum())
    table = table[~blank_qid & ~blank_label]

    first_label = table.groupby("qid", sort=False)["label"].transform("first")
    report["rows_with_conflicting_label"] = int((table["label"] != first_label).sum())
    table = table.assign(label=first_label)

    repeats_label = table["alias"].str.casefold() == table["label"].str.casefold()
    report["dropped_alias_equal_to_label"] = int((repeats_label & (table["alias"] != "")).sum())
    table = table.assign(alias=table["alias"].where(~repeats_label, ""))

    is_url = table["alias"].str.contains(_URL)
    report["dropped_url_aliases"] = int(is_url.sum())
    alias_key = table["alias"].str.casefold()
    entities_named = table.groupby(alias_key)["qid"].transform("nunique")
    generic = (table["alias"] != "") & ~is_url & (entities_named > max_alias_entities)
    report["dropped_generic_aliases"] = int(generic.sum())
    table = table.assign(alias=table["alias"].where(~is_url & ~generic, ""))

    alias_key = table["alias"].str.casefold()
    duplicate = table.assign(_key=alias_key).duplicated(["qid", "_key"])
    report["dropped_duplicate_pairs"] = int((duplicate & (table["alias"] != "")).sum())
    table = table[~duplicate]

    # An aliased entity needs no empty-alias row; an alias-less one keeps exactly one.
    has_alias = (table["alias"] != "").groupby(table["qid"]).transform("any")
    table = table[(table["alias"] != "") | ~has_alias].reset_index(drop=True)

    if table.empty:
        raise UserError(f"{source}: nothing left after cleaning ({format_report(report)}). "
                        "Every row needs a non-blank qid and label.")
    if not (table["alias"] != "").any():
        raise UserError(f"{source}: no aliases left after cleaning ({format_report(report)}); "
                        "training needs (alias, label) pairs.")
    report["rows_out"] = len(table)
    return table, report


def load_table(path: Path, qid_col="qid", label_col="label", alias_col="alias",
               max_alias_entities: int = MAX_ALIAS_ENTITIES, encoding: str = "utf-8") -> tuple[pd.DataFrame, dict]:
    raw = read_table(path, encoding)
    table = rename_columns(raw, qid_col, label_col, alias_col, str(path))
    return clean_table(table, str(path), max_alias_entities)
