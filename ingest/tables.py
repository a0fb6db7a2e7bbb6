"""Tables: rows kept on one line as `label | 1,488 | 1,544`, and the title and column
headers that a chunk cut from the middle of a table needs.

pypdf's plain extraction often puts every cell of a financial statement on a line
of its own, so a row label ends up far from its numbers (and in another chunk).
Its layout mode keeps each printed line together, padding cells apart with spaces:
`table_text` turns such a page into rows whose cells are joined by " | " (a
separator the sentence splitter in rag/text.py does not cut at, unlike a run of
spaces), and only when the page really holds a table, so prose keeps pypdf's
plain text byte for byte. `table_blocks` finds those rows again in page text (PDF
or an HTML table, which ingest/html.py also joins with " | ") for the chunker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag.profiles import is_year

CELL_SEP = " | "
_GAP = re.compile(r" {2,}")
_LEADER = re.compile(r" *\.(?: ?\.){3,} *")  # "Revenue ........ 1,200": dots lead to a cell
_CURRENCY = "$€£¥"
_NUMBER = re.compile(r"[-+–−]?[$€£¥]?\(?[-+–−]?[$€£¥]?(?:\d{1,3}(?:[,.\u00a0]\d{3})+|\d+)"
                     r"(?:[.,]\d+)?\)?%?\*?\)?")
_PLACEHOLDER = {"—", "–", "-", "−", "—%", "-%", "n/a", "N/A", "NM", "nm", "*"}
_DIGITS = re.compile(r"\d")
_MIN_ROWS = 4  # fewer numeric rows than this is not worth a change of extraction
_MIN_ROW_SHARE = 0.2  # ...nor is a page where they are a small share of the lines
_MAX_HEAD_LINES = 3  # title lines kept above a table's first row
_MAX_HEAD_CHARS = 300
_MAX_HEAD_LINE = 120  # a longer line above a table is running text, not its title


def is_number(cell: str) -> bool:
    cell = cell.strip()
    return cell in _PLACEHOLDER or bool(_NUMBER.fullmatch(cell.replace(" ", "")))


def _cells(line: str) -> list[str]:
    """A layout line cut at its gaps; a lone currency sign joins the number after it,
    a lone % or ) the number before it; dot leaders are gaps."""
    cells: list[str] = []
    for cell in _GAP.split(_LEADER.sub("  ", line).strip()):
        if len(cell) > 1 and cell[-1] in _CURRENCY and _DIGITS.search(cell):
            cells.append(cell[:-1])  # "$(104.3)$   12.3": the sign belongs to the next cell
            cell = cell[-1]
        if cells and (cells[-1] in _CURRENCY or cells[-1] == "("):
            cells[-1] += cell
        elif cells and cell in ("%", ")", "%)") and _DIGITS.search(cells[-1]):
            cells[-1] += cell
        elif cell:
            cells.append(cell)
    return cells


def _numeric_cells(cells: list[str]) -> int:
    return sum(map(is_number, cells))


def _is_layout_row(cells: list[str]) -> bool:
    return _numeric_cells(cells) >= 2


def _columns_of_prose(lines: list[list[str]]) -> bool:
    """Two columns of running text side by side: layout mode would interleave them."""
    wide = sum(1 for cells in lines if len(cells) >= 2 and not _numeric_cells(cells)
               and min(len(cells[0]), len(cells[-1])) >= 25)
    return wide >= 5 and wide * 4 >= len(lines)


def table_text(layout: str) -> str | None:
    """The text of a page from pypdf's layout mode with table rows as `cell | cell`, or
    None if the page holds no table worth it (then keep the plain extraction)."""
    lines = [_cells(line) for line in layout.split("\n")]
    filled = [cells for cells in lines if cells]
    rows = sum(1 for cells in filled if _is_layout_row(cells))
    if rows < _MIN_ROWS or rows < _MIN_ROW_SHARE * len(filled) or _columns_of_prose(filled):
        return None
    return "\n".join((CELL_SEP if _is_layout_row(cells) else " ").join(cells)
                     for cells in lines)


_PLAIN_NUMBER = re.compile(r"(?<![\w.])\(?[$€£¥]?\d[\d,.]*\)?%?(?![\w])")


def may_hold_table(plain: str) -> bool:
    """A cheap look at the plain extraction: enough lines that are mostly numbers for a
    table to be likely (layout mode costs about as much again as plain extraction)."""
    numeric = 0
    for line in plain.split("\n"):
        words = line.split()
        if words and len(_PLAIN_NUMBER.findall(line)) * 2 >= len(words):
            numeric += 1
            if numeric >= _MIN_ROWS:
                return True
    return False


# -- finding tables in page text (for the chunker) ----------------------------------


@dataclass(frozen=True)
class Table:
    start: int  # offset of its first row (or of its header row) in the page text
    end: int  # end of its last row
    head_start: int  # where its title lines begin (== start if none)
    context: str  # title and column headers, one line each joined with " / "


def is_row(line: str) -> bool:
    """A table row in page text: cells joined by " | ", at least two of them numbers."""
    if CELL_SEP.strip() not in line:
        return False
    return _numeric_cells(line.split(CELL_SEP.strip())) >= 2


def _is_header_row(line: str) -> bool:
    """Column headers: years, or cells without digits (`2018 | 2017`, `Q1 | Q2` is not)."""
    cells = [c.strip() for c in line.split(CELL_SEP.strip())]
    return all(is_year(c) or not _DIGITS.search(c) for c in cells[1:] or cells)


def line_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of every line of text[start:end], without its newline."""
    end = len(text) if end is None else end
    out, pos = [], start
    while pos < end:
        nl = text.find("\n", pos, end)
        stop = end if nl < 0 else nl
        out.append((pos, stop))
        pos = stop + 1
    return out


def table_blocks(text: str, max_gap_lines: int = 3) -> list[Table]:
    """The tables of a page: runs of rows with at most `max_gap_lines` other non-blank
    lines between them (section labels inside a statement); a header row after data
    rows starts a new table."""
    lines = [(a, b, text[a:b].strip()) for a, b in line_spans(text)]
    tables: list[Table] = []
    first = last = -1  # indices in `lines` of the current table's first and last rows
    gap = 0
    for i, (_, _, line) in enumerate(lines):
        if not line:
            continue
        if is_row(line):
            restart = first >= 0 and (gap > max_gap_lines
                                      or (_is_header_row(line) and not _is_header_row(
                                          lines[last][2])))
            if restart:
                tables.append(_table(text, lines, first, last))
                first = -1
            if first < 0:
                first = i
            last, gap = i, 0
        elif first >= 0:
            gap += 1
    if first >= 0:
        tables.append(_table(text, lines, first, last))
    return tables


def _table(text: str, lines: list[tuple[int, int, str]], first: int, last: int) -> Table:
    heads: list[str] = []
    head_start = lines[first][0]
    i = first - 1
    while i >= 0 and len(heads) < _MAX_HEAD_LINES:
        line = lines[i][2]
        if line:
            if (is_row(line) or len(line) > _MAX_HEAD_LINE or line[-1] in ".!?;"
                    or sum(map(len, heads)) + len(line) > _MAX_HEAD_CHARS):
                break  # another table, or running text
            heads.insert(0, line)
            head_start = lines[i][0]
        i -= 1
    header = [lines[first][2]] if _is_header_row(lines[first][2]) else []
    return Table(start=lines[first][0], end=lines[last][1], head_start=head_start,
                 context=" / ".join(heads + header))
