"""`rag bench ocr`: scanned pages per second through the real loader, and how well they read.

The text PDFs given (default: the demo corpus's) are drawn to grey images at 300 dpi
and saved as image-only PDFs (Pillow, JPEG inside) in a temporary folder, as a
scanner would. The loader reads them back (`ingest.loaders`: parser processes, OCR
of every page) and the figures are:

- CPU seconds per page (drawing, Tesseract; read in this process, so a busy machine
  slows the wall clock but not this), and OCR pages/s with 1 and with 2 parser processes
  (wall clock, process start included);
- the character error rate of each page against the original's text layer, after
  lowercasing and collapsing whitespace;
- the original text PDFs loaded with OCR on and off: the same rate, since none of
  their pages needs OCR.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

CORPUS = Path(__file__).resolve().parents[3] / "corpora"


def scan(source: Path, dest: Path, dpi: int = 300) -> int:
    """An image-only copy of `source`; its number of pages."""
    import pypdfium2 as pdfium

    images = [page.render(scale=dpi / 72, grayscale=True).to_pil()
              for page in pdfium.PdfDocument(str(source))]
    images[0].save(dest, save_all=True, append_images=images[1:], resolution=dpi)
    return len(images)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y))
        previous = current
    return previous[-1]


def cer(reference: str, read: str, *, spaces: bool = True) -> float:
    """Character error rate after lowercasing and collapsing whitespace (removing it for
    scripts written without spaces), in reading order."""
    ref, hyp = (" ".join(t.lower().split()) for t in (reference, read))
    if not spaces:
        ref, hyp = ref.replace(" ", ""), hyp.replace(" ", "")
    return edit_distance(ref, hyp) / max(1, len(ref))


def run(paths: list[Path], languages: str, copies: int = 2) -> dict:
    from ingest import ocr
    from ingest.loaders import iter_load, load

    why = ocr.unavailable(languages)
    if why:
        raise RuntimeError(why)
    sources = paths or sorted(CORPUS.glob("*.pdf"))
    originals = {p: load(p, ocr_languages="off") for p in sources}
    figures: dict = {"languages": languages}
    with tempfile.TemporaryDirectory(prefix="rag-bench-ocr-") as tmp:
        scans = {}
        for i in range(copies):  # copies: enough pages to keep two processes busy
            for p in sources:
                dest = Path(tmp) / f"{i}-{p.name}"
                scan(p, dest)
                scans[dest] = p
        pages = sum(len(originals[p].pages) for p in scans.values())
        cpu = _cpu()
        for path in scans:
            load(path, ocr_languages=languages)
        figures["cpu_s_per_page"] = (_cpu() - cpu) / pages
        for workers in (1, 2):
            start = time.perf_counter()
            docs = dict(iter_load(list(scans), timeout_s=600, workers=workers,
                                  ocr_languages=languages))
            figures[f"pages_per_s_{workers}"] = pages / (time.perf_counter() - start)
        rates = []
        for path, source in scans.items():
            doc = docs[path]
            if isinstance(doc, Exception):
                raise RuntimeError(f"{path.name}: {doc}")
            rates += [cer(a.text, b.text) for a, b in zip(originals[source].pages, doc.pages)]
    figures.update(pages=pages, cer_mean=statistics.mean(rates), cer_max=max(rates))
    # Text PDFs, no page of which goes to OCR: the best of 7 alternating rounds each.
    text_pages = sum(len(d.pages) for d in originals.values())
    best = {"off": float("inf"), languages: float("inf")}
    for _ in range(7):
        for setting in best:
            start = time.perf_counter()
            for p in sources:
                load(p, ocr_languages=setting)
            best[setting] = min(best[setting], time.perf_counter() - start)
    for setting, seconds in best.items():
        figures[f"text_pages_per_s_{setting}"] = text_pages / seconds
    _print(figures, len(sources))
    return figures


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (Tesseract)."""
    import resource

    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                    resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _print(f: dict, files: int) -> None:
    table = Table(title=f"OCR of {f['pages']} scanned pages ({files} PDFs x copies,"
                        f" 300 dpi, languages {f['languages']})", show_edge=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("CPU s per page (drawing + Tesseract)", f"{f['cpu_s_per_page']:.2f}")
    table.add_row("OCR pages/s, 1 parser process", f"{f['pages_per_s_1']:.2f}")
    table.add_row("OCR pages/s, 2 parser processes", f"{f['pages_per_s_2']:.2f}")
    table.add_row("character error rate, mean", f"{f['cer_mean']:.4f}")
    table.add_row("character error rate, worst page", f"{f['cer_max']:.4f}")
    table.add_row("text PDFs, pages/s with OCR off", f"{f['text_pages_per_s_off']:.1f}")
    table.add_row(f"text PDFs, pages/s with OCR {f['languages']}",
                  f"{f['text_pages_per_s_' + f['languages']]:.1f}")
    Console().print(table)
