"""A tiny PDF writer for the demo corpus and tests: text pages in Helvetica, no dependencies.

Paragraphs are wrapped to the page width; a blank line separates them, which
pypdf reads back as line breaks, so the text round-trips through ingestion.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

_WIDTH = 92  # characters per line at 10 pt on A4 with margins
_LINES = 60  # lines per page


def _escape(line: str) -> str:
    line = line.encode("cp1252", errors="replace").decode("cp1252")
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _stream(lines: list[str]) -> bytes:
    out = ["BT", "/F1 10 Tf", "12 TL", "56 790 Td"]
    for line in lines:
        out.append(f"({_escape(line)}) '")
    out.append("ET")
    return "\n".join(out).encode("cp1252", errors="replace")


def make_pdf(pages: list[list[str]], *, title: str = "", password: str | None = None) -> bytes:
    """One list of paragraphs per page. With `password`, encrypt it through pypdf."""
    objects: list[bytes] = []
    kids = []
    page_objs = []
    for paragraphs in pages:
        lines: list[str] = []
        for para in paragraphs:
            lines.extend(textwrap.wrap(para, _WIDTH) or [""])
            lines.append("")
        page_objs.append(lines[:_LINES])
    # 1: catalog, 2: pages, 3: font, 4: info, then (page, content) pairs
    n = len(page_objs)
    for i in range(n):
        kids.append(f"{5 + 2 * i} 0 R")
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {n} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
                   b"/Encoding /WinAnsiEncoding >>")
    objects.append(f"<< /Title ({_escape(title)}) /Producer (rag pdfgen) >>".encode("cp1252"))
    for i, lines in enumerate(page_objs):
        content = _stream(lines)
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
                       f"/Resources << /Font << /F1 3 0 R >> >> /Contents {6 + 2 * i} 0 R >>"
                       .encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content
                       + b"\nendstream")
    body = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        body += b"%010d 00000 n \n" % off
    body += (b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\nstartxref\n%d\n%%%%EOF\n"
             % (len(objects) + 1, xref))
    data = bytes(body)
    return _encrypt(data, password) if password else data


def _encrypt(data: bytes, password: str) -> bytes:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write_pdf(path: Path, pages: list[list[str]], *, title: str = "",
              password: str | None = None) -> Path:
    path.write_bytes(make_pdf(pages, title=title, password=password))
    return path
