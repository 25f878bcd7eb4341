"""EmotioNet (Benitez-Quiroz et al. 2016/2017): the manually annotated AU set, from images the user downloaded.

Layout (reference/datasets.md): the manually annotated table `emotionet_facs_24600.xlsx` (or the same table as a
.csv) with a column `URL` and AU columns named with literal quotes (`'AU 1'`, `'AU 2'`, ... `'AU 43'`); URLs may
carry a trailing `'`. Values: 1 present, 0 absent, 999 unknown (that AU gets mask 0 in that image). EmotioNet
ships no images: the user fetched them from the URLs into a folder (option `images`, default `<root>/images`)
under the URL's basename (the last path component, query string removed; the percent-decoded name is accepted
too). AUs are read by column NAME; every AU column goes to `facs/*` (occurrence, intensity -1), AU43 included,
and the canonical `au`/`au_mask` come from them; an AU column that is absent has mask 0.

Track 2 (optional): `--option expressions=FILE` names a .csv/.xlsx with a `URL` column and a label column
(`expression`, `emotion`, `category`, `label` or `class`) holding category names ("Happy", "Happily surprised")
or numeric codes; numeric codes need `--option expression_codes=FILE`, lines `<code> <category name>`
(EmotioNet's 16 track-2 categories are 6 basic + 10 compound, and which 10 is not confirmed: hence a file).
Basic names fill `expr`, compound names `compound` (Du et al. order), by name. An image in both lists gets both
labels; an image only in the expression list has AU mask 0.

Splits: the challenge's manual set has no public split and no subject ids: a seeded split by image
(`split_of(sample_id)`): `test_fraction` (0.15) test, `validation_fraction` (0.15) validation, the rest train.
Faces: detected and aligned (MTCNN + 5-point template).
"""
from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import unquote, urlsplit

from fbnet_tf.labels import COMPOUND_EXPRESSIONS, expression_index, parse_au_number
from tfrecords_builder.base import Builder, Item, Reason, Skip, resolve_in_root

TABLE = "emotionet_facs_24600.xlsx"
PRESENT, ABSENT, UNKNOWN = 1, 0, 999
LABEL_COLUMNS = frozenset({"expression", "emotion", "category", "label", "class"})  # track-2 list label column


def url_basename(url: str) -> str:
    """The file name a downloaded image is saved under: last path component of the URL, quotes removed."""
    text = str(url).strip().strip("'\"").strip()
    return urlsplit(text).path.rstrip("/").rsplit("/", 1)[-1]


def read_table(path: Path) -> list[list]:
    """All rows of an .xlsx or .csv table, header included, as lists of cells (row i = line i + 1)."""
    import pandas as pd

    if path.suffix.lower() in (".xlsx", ".xlsm"):
        frame = pd.read_excel(path, header=None, dtype=object, engine="openpyxl")
    else:
        frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=False)
    return frame.astype(object).where(frame.notna(), None).values.tolist()


class EmotioNet(Builder):
    """EmotioNet manually annotated AUs (11 AUs of the 2017 challenge + AU43, kept in facs/*)."""

    NAME = "emotionet"
    VERSION = "1.1.0"
    RELEASE_NOTES = {"1.0.0": "first release: manual AU table, detect + align, seeded 70/15/15 split by image",
                     "1.1.0": "every AU column in facs/* (AU43 included; 999 = unknown left out); track-2 "
                              "category kept as expr_native / expr_native_name"}
    DESCRIPTION = "EmotioNet manual AUs (--root: the folder holding emotionet_facs_24600.xlsx and images/)"
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Request EmotioNet at http://cbcsl.ece.ohio-state.edu/dbform_emotionet.html, "
                                    "download the images listed in the table into one folder (file name = URL "
                                    "basename) and point --root at the folder holding the table "
                                    "(--option images=DIR if the images are elsewhere, --option table=FILE for "
                                    "another table name).")
    EXPECTED_LAYOUT = (f"{TABLE} (or a .csv/.xlsx with a URL column and 'AU 1' ... columns)",
                       "images/<URL basename>.jpg")
    ITEMS_PER_SHARD = 2000
    OPTIONS = {"table": "", "images": "images", "expressions": "", "expression_codes": "",
               "validation_fraction": 0.15, "test_fraction": 0.15, "seed": 0}

    def _table(self, required: bool = True) -> Path | None:
        if self.options["table"]:
            return self.option_path("table")
        candidates = [self.root / TABLE] + sorted(self.root.glob("*.xlsx")) + sorted(self.root.glob("*.csv"))
        expressions = self.option_path("expressions") if self.options["expressions"] else None
        for candidate in candidates:
            if candidate.is_file() and candidate != expressions:
                return candidate
        if required:
            raise self.layout_error(f"no {TABLE} and no .xlsx/.csv table in {self.root}")
        return None

    def list_items(self):
        images = self.option_path("images", folder=True)
        expressions = {}  # image name -> (labels, where) from the optional track-2 list
        if self.options["expressions"]:
            for entry in self._expression_rows():
                if isinstance(entry, Skip):
                    yield entry
                elif entry[0] in expressions:
                    yield Skip(Reason.DUPLICATE, f"{entry[0]} is listed more than once; the first is kept",
                               **entry[2])
                else:
                    expressions[entry[0]] = entry[1:]
        table = self._table(required=not expressions)
        for entry in self._au_rows(table) if table else ():
            if isinstance(entry, Skip):
                yield entry
                continue
            name, labels, where = entry
            labels.update(expressions.pop(name, ({}, None))[0])
            yield from self._item(images, name, labels, where)
        for name, (labels, where) in expressions.items():  # images with an expression and no AU row
            yield from self._item(images, name, labels, where)

    def _item(self, images: Path, name: str, labels: dict, where: dict):
        """The Item of one downloaded image (a generator: yields the Skip of an unsafe name instead)."""
        try:
            image = resolve_in_root(images, name, **where)
        except Skip as skip:
            yield skip
            return
        decoded = images / unquote(name)
        if not image.is_file() and decoded.is_file() and decoded.parent == images:
            image = decoded
        key = self.relative_or_name(image)  # images kept outside the root: the file name is the id
        yield Item(split=self.seeded_split(key), key=key, data={"image": str(image), **labels}, **where)

    def _url_table(self, path: Path):
        """(header, rows) of a table keyed by image URL; rows yields (image name, row, where) per non-blank row,
        or the Skip of a row whose URL has no file name. Check the header's URL column before iterating."""
        rows = read_table(path)
        file = self.relative_or_name(path, str(path))
        header = [str(cell).strip() if cell is not None else "" for cell in (rows[0] if rows else [])]

        def entries():
            url_column = header.index("URL")
            for number, row in enumerate(rows[1:], start=2):
                if all(cell is None or str(cell).strip() == "" for cell in row):
                    continue
                where = {"file": file, "line": number}
                name = url_basename(row[url_column]) if row[url_column] is not None else ""
                if not name or name in (".", ".."):
                    yield Skip(Reason.BAD_ROW, f"URL {row[url_column]!r} has no file name", **where)
                else:
                    yield name, row, where
        return header, entries()

    def _au_rows(self, table: Path):
        """(image name, {"facs": [[AU, occurrence, -1], ...]}, where) per usable row of the AU table; Skip per
        unusable one."""
        header, rows = self._url_table(table)
        if "URL" not in header:
            raise self.layout_error(f"{table} line 1 has no URL column (columns: {header[:6]}...)")
        au_headers = {}
        for column, name in enumerate(header):
            try:
                au_headers[column] = parse_au_number(name)
            except ValueError:
                continue  # URL and any other non-AU column
        if not au_headers:
            raise self.layout_error(f"{table} line 1 has no AU column ('AU 1', 'AU 2', ...)")
        for entry in rows:
            if isinstance(entry, Skip):
                yield entry
                continue
            name, row, where = entry
            facs, problem = [], None
            for column, number_of_au in au_headers.items():
                value = _code(row[column])
                if value not in (PRESENT, ABSENT, UNKNOWN):
                    problem = f"AU {number_of_au} = {row[column]!r}; expected 1, 0 or 999"
                    break
                if value != UNKNOWN:
                    facs.append([number_of_au, float(value), -1.0])
            if problem:
                yield Skip(Reason.LABEL_OUT_OF_RANGE, problem, **where)
            elif not facs:
                yield Skip(Reason.NO_LABEL, "every AU is 999 (unknown)", **where)
            else:
                yield name, {"facs": sorted(facs)}, where

    def _expression_rows(self):
        """(image name, {"expr"} or {"compound"}, where) per usable row of the track-2 list; Skip otherwise."""
        path = self.option_path("expressions")
        header, rows = self._url_table(path)
        label_column = next((c for c, name in enumerate(header) if name.lower() in LABEL_COLUMNS), None)
        if "URL" not in header or label_column is None:
            raise self.layout_error(f"{path} line 1 ({header[:4]}) needs a URL column and one of "
                                    f"{sorted(LABEL_COLUMNS)}")
        codes = read_category_codes(self.option_path("expression_codes")) if self.options["expression_codes"] \
            else None
        for entry in rows:
            if isinstance(entry, Skip):
                yield entry
                continue
            name, row, where = entry
            value = "" if row[label_column] is None else str(row[label_column]).strip()
            if codes is not None:
                code = _code(value)
                if code not in codes:
                    yield Skip(Reason.LABEL_OUT_OF_RANGE, f"category {value!r} is not a code of "
                                                          f"{self.options['expression_codes']}", **where)
                    continue
                category_name, labels = codes[code]
                native = {"expr_native": code, "expr_native_name": category_name}
            else:
                try:
                    labels = category(value)
                except KeyError as error:
                    yield Skip(Reason.LABEL_OUT_OF_RANGE, f"{error.args[0]} (numeric codes need "
                                                          "--option expression_codes=FILE)", **where)
                    continue
                native = {"expr_native_name": value}  # no index without a code file
            if labels is None:
                yield Skip(Reason.NO_LABEL, f"category {value!r} is not an expression", **where)
                continue
            yield name, {**labels, **native}, where

    def examples(self, item: Item):
        image = self.read_image(Path(item.data["image"]), item)
        crop = self.detect_and_align(image, item, item.key)
        yield self.sample(item, crop, facs=item.data.get("facs"), expr=item.data.get("expr", -1),
                          compound=item.data.get("compound", -1), expr_native=item.data.get("expr_native", -1),
                          expr_native_name=item.data.get("expr_native_name", ""))


def category(name: str) -> dict | None:
    """{"expr": canonical index} for a basic expression name, {"compound": Du et al. index} for a compound one,
    None for a non-expression label; KeyError for an unknown name."""
    index = -2
    try:
        index = expression_index(name)
    except KeyError:
        pass
    if index is None:
        return None
    if index >= 0:
        return {"expr": int(index)}
    key = " ".join(str(name).strip().strip("'\"").lower().replace("_", " ").split())
    for position, compound in enumerate(COMPOUND_EXPRESSIONS):
        if compound.lower() == key:
            return {"compound": position}
    raise KeyError(f"category {name!r} is neither a basic expression nor one of {COMPOUND_EXPRESSIONS}")


def read_category_codes(path: Path) -> dict[int, tuple[str, dict | None]]:
    """{native code: (category name, labels)} from a mapping file of lines `<code> <category name>` (or
    `<code>,<name>`; # comments).

    Which compound categories EmotioNet's track 2 uses is not confirmed, hence a file rather than a table in code.
    """
    codes = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        code, _, name = text.replace(",", " ", 1).replace("\t", " ", 1).partition(" ")
        try:
            codes[int(code)] = (name.strip(), category(name))
        except (ValueError, KeyError) as error:
            raise ValueError(f"{path}:{number}: {line!r}: {error}; expected '<code> <category name>'") from None
    return codes


def _code(cell) -> int | None:
    """An integer code from a table cell (1, 1.0, '1', ' 999 '), None when it is not a whole number."""
    try:
        value = float(str(cell).strip())
    except (TypeError, ValueError):
        return None
    return int(value) if math.isfinite(value) and value == int(value) else None
