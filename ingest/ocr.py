"""Scanned PDF pages -> text: PDFium draws the page, the `tesseract` command reads it.

ingest/pdf.py sends here only the pages that have no text layer. Per page:

1. render it in grey at DPI (pypdfium2; a page past MAX_PIXELS at a lower resolution);
2. a page without ink is blank and never reaches Tesseract;
3. Tesseract reads it as TSV (each word with its box and confidence), and the text is
   rebuilt line by line and paragraph by paragraph (no spaces between Chinese or
   Thai words unless the page shows a gap);
4. the page counts as read only when enough letters come in words Tesseract is
   confident of (`Reading.legible`): photos, rules and stains come back as a few
   low-confidence "words", real text as many confident ones.

Languages: `ocr_languages` (rag/config.py) is "auto", "off", or Tesseract's own
form ("eng", "eng+deu"). "auto" reads each document with the installed pack of its
script: Tesseract's script detection (the osd pack) on the first page with ink
names the script, and when several installed packs write it (chi_sim and chi_tra)
the one Tesseract is most confident in on that page reads the document. A page
that reads as nothing is detected again: another script, or a page turned
sideways. All packs at once ("eng+chi_sim+chi_tra+tha+ara+hin") misread Chinese
(character error rate 0.33 against 0.03 with chi_sim alone) and took 2-4x as long.

Tesseract runs single-threaded (OMP_THREAD_LIMIT=1): parsers already run one per core,
and OpenMP's threads spin when the cores are busy (a page took 0.43 CPU seconds
single-threaded, 2.0-4.4 with two threads, on a loaded 2-core machine).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DPI = 300
MAX_PIXELS = 40_000_000  # A4 at 300 dpi is 8.7 M pixels; a poster is drawn at a lower dpi
PAGE_S = 120.0  # the most one page may take: drawing, script detection, every reading
INK = 96  # grey levels away from the page's background that count as ink
MIN_INK = 1e-5  # share of a page's pixels that must be ink (A4 at 300 dpi: ~90 pixels)
CONFIDENT = 60  # Tesseract's word confidence (0-100) from which a word counts as read
KEEP = 30  # below this a "word" is left out of the text (barcodes, rules: 0-25)
GAP = 0.8  # a gap this many line heights wide is a space, even in Chinese or Thai
LEGIBLE_LETTERS = 8  # letters in confident words that make a page legible...
LEGIBLE_SHARE = 0.5  # ...when they are at least this share of all the letters read
MAX_TRIALS = 3  # packs of one script tried on the first page (chi_sim against chi_tra)

# Tesseract's packs by the script names its detection (osd) reports; first: the default.
SCRIPTS = {
    "Latin": ("eng", "fra", "deu", "spa", "ita", "por", "nld", "pol", "ces", "swe", "dan",
              "nor", "fin", "hun", "ron", "tur", "vie", "ind", "cat", "hrv", "slk", "slv"),
    "Han": ("chi_sim", "chi_tra"), "Japanese": ("jpn",), "Korean": ("kor",),
    "Hangul": ("kor",), "Cyrillic": ("rus", "ukr", "bul", "srp", "bel", "mkd", "kaz"),
    "Greek": ("ell",), "Arabic": ("ara", "fas", "urd"), "Hebrew": ("heb", "yid"),
    "Devanagari": ("hin", "mar", "nep", "san"), "Bengali": ("ben", "asm"), "Thai": ("tha",),
    "Lao": ("lao",), "Khmer": ("khm",), "Myanmar": ("mya",), "Tamil": ("tam",),
    "Telugu": ("tel",), "Kannada": ("kan",), "Malayalam": ("mal",), "Gujarati": ("guj",),
    "Gurmukhi": ("pan",), "Oriya": ("ori",), "Sinhala": ("sin",), "Georgian": ("kat",),
    "Armenian": ("hye",), "Ethiopic": ("amh",),
}
NOT_LANGUAGES = ("osd", "equ")  # script detection and equations: installed, never a reader


@dataclass(frozen=True)
class PageText:
    """What OCR made of one page: `status` read, blank, illegible or failed (`detail`)."""

    number: int
    text: str = ""
    status: str = "read"
    detail: str = ""
    languages: str = ""


class PageFailed(Exception):
    """A page could not be drawn or read; the message says why in a few words."""


@functools.lru_cache(maxsize=1)
def tesseract() -> str | None:
    return shutil.which("tesseract")


@functools.lru_cache(maxsize=1)
def installed_languages() -> tuple[str, ...]:
    """The packs `tesseract --list-langs` names (osd and equ included)."""
    if not tesseract():
        return ()
    try:
        run = subprocess.run([tesseract(), "--list-langs"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    lines = run.stdout.decode("utf-8", "replace").splitlines()
    return tuple(line.strip() for line in lines[1:] if line.strip())


def unavailable(languages: str) -> str | None:
    """Why OCR cannot run with the setting `languages`, or None when it can."""
    if languages.strip().lower() in ("", "off", "none"):
        return "OCR is off (ocr_languages)"
    if not tesseract():
        return "OCR needs Tesseract, which is not installed"
    try:
        import pypdfium2  # noqa: F401
    except ImportError:
        return "OCR needs pypdfium2, which is not installed"
    packs = [p for p in installed_languages() if p not in NOT_LANGUAGES]
    if not packs:
        return "OCR needs a Tesseract language pack, and none is installed"
    if languages != "auto":
        missing = [p for p in languages.split("+") if p not in packs]
        if missing:
            return (f"OCR language {'+'.join(missing)} is not installed"
                    f" (installed: {'+'.join(packs)})")
    return None


def read_pages(path: Path, numbers: Sequence[int], *, password: str | None = None,
               languages: str = "auto", on_page: Callable[[int], None] | None = None
               ) -> Iterator[PageText]:
    """OCR the pages `numbers` (1-based) of the PDF at `path`, one PageText each, in order.

    Call `unavailable(languages)` first. `on_page(number)` is called as each page starts
    (the parser's time limit grows by PAGE_S for it, ingest/loaders.py).
    """
    try:
        pages = _Pages(path, password)
    except PageFailed as exc:
        for number in numbers:
            yield PageText(number, status="failed", detail=str(exc))
        return
    reader = _Reader(languages)
    try:
        for number in numbers:
            if on_page:
                on_page(number)
            deadline = time.monotonic() + PAGE_S * 0.9  # leaves the parser's limit a margin
            try:
                image, dpi = pages.image(number)
                if not has_ink(image):
                    yield PageText(number, status="blank")
                    continue
                yield reader.read(number, image, dpi, deadline)
            except PageFailed as exc:
                yield PageText(number, status="failed", detail=str(exc))
    finally:
        pages.doc.close()


class _Pages:
    def __init__(self, path: Path, password: str | None):
        import pypdfium2 as pdfium

        try:
            self.doc = pdfium.PdfDocument(str(path), password=password or None)
        except pdfium.PdfiumError as exc:
            raise PageFailed(f"PDFium cannot open it: {_tail(str(exc))}") from exc

    def image(self, number: int) -> tuple[np.ndarray, int]:
        """Page `number` in grey (uint8, rows x columns) and its dpi: DPI, or less for a
        page larger than MAX_PIXELS."""
        import pypdfium2 as pdfium

        try:
            page = self.doc[number - 1]
            width, height = page.get_size()
            scale = min(DPI / 72, (MAX_PIXELS / max(width * height, 1.0)) ** 0.5)
            bitmap = page.render(scale=scale, grayscale=True)
            image = np.array(bitmap.to_numpy(), dtype=np.uint8)  # a copy: the bitmap goes
        except (pdfium.PdfiumError, ValueError, IndexError) as exc:
            raise PageFailed(f"PDFium cannot draw it: {_tail(str(exc))}") from exc
        return (image[..., 0] if image.ndim == 3 else image), max(1, round(scale * 72))


def has_ink(image: np.ndarray) -> bool:
    """Whether anything stands out from the page's background (a blank scan does not)."""
    sample = image[::2, ::2]
    if sample.size == 0:
        return False
    background = int(np.median(sample[::4, ::4]))
    ink = np.count_nonzero(np.abs(sample.astype(np.int16) - background) > INK)
    return ink >= max(2, MIN_INK * sample.size)


class _Reader:
    """Reads pages with the document's packs: fixed, or found on its first page with ink."""

    def __init__(self, languages: str):
        installed = installed_languages()
        self.packs = [p for p in installed if p not in NOT_LANGUAGES]
        self.osd = "osd" in installed
        self.auto = languages == "auto"
        self.languages = languages if not self.auto else (
            self.packs[0] if len(self.packs) == 1 else "")

    def read(self, number: int, image: np.ndarray, dpi: int, deadline: float) -> PageText:
        if self.languages:
            languages = self.languages
            reading = read_image(image, dpi, languages, deadline)
            if not reading.legible and self.osd:  # another script, or turned sideways?
                again = self._detect(image, dpi, deadline, tried=languages)
                if again and again[0].legible:
                    reading, languages, _ = again
        else:
            reading, languages, detected = self._detect(image, dpi, deadline)
            if reading.legible and detected:
                self.languages = languages  # the document's packs from now on
        if not reading.legible:
            return PageText(number, status="illegible", languages=languages)
        return PageText(number, reading.text, languages=languages)

    def _detect(self, image: np.ndarray, dpi: int, deadline: float, tried: str = ""
                ) -> tuple[Reading, str, bool] | None:
        """Read `image` upright with the packs of the script osd sees; the most confident
        reading, its packs, and whether the script was told (not the default pack)."""
        script, rotate = detect_script(image, dpi, deadline) if self.osd else ("", 0)
        if rotate:
            image = np.rot90(image, k=-(rotate // 90))  # osd's "Rotate" turns clockwise
        if self.auto:
            candidates = [p for p in SCRIPTS.get(script, ()) if p in self.packs][:MAX_TRIALS]
        else:
            candidates = [self.languages]
        detected = bool(candidates) and self.auto
        candidates = [c for c in candidates or [self._default()] if c != tried or rotate]
        best = None
        for languages in candidates:
            reading = read_image(image, dpi, languages, deadline)
            if best is None or reading.score > best[0].score:
                best = (reading, languages, detected)
        return best

    def _default(self) -> str:
        return "eng" if "eng" in self.packs else self.packs[0]


def detect_script(image: np.ndarray, dpi: int, deadline: float) -> tuple[str, int]:
    """Tesseract's script detection: (script name, clockwise degrees to turn the page
    upright); ("", 0) when it cannot tell (too few characters)."""
    try:
        out = _tesseract(image, dpi, ["-l", "osd", "--psm", "0"], deadline)
    except PageFailed:
        return "", 0
    fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    try:
        rotate = int(fields.get("Rotate", "0")) % 360
    except ValueError:
        rotate = 0
    return fields.get("Script", "").strip(), rotate


@dataclass(frozen=True)
class Reading:
    """Tesseract's reading of one image: its text and how sure it was."""

    text: str
    letters: int  # letters in all words read
    confident: int  # letters in words read with confidence >= CONFIDENT
    score: float  # mean word confidence, weighted by letters: which pack read best

    @property
    def legible(self) -> bool:
        return self.confident >= LEGIBLE_LETTERS and self.confident >= LEGIBLE_SHARE * self.letters


def read_image(image: np.ndarray, dpi: int, languages: str, deadline: float) -> Reading:
    return parse_tsv(_tesseract(image, dpi, ["-l", languages, "--psm", "3", "tsv"], deadline))


def parse_tsv(tsv: str) -> Reading:
    """Text from Tesseract's TSV: words joined into lines, lines into paragraphs."""
    paragraphs: dict[tuple[str, str], dict[str, list]] = {}
    letters = confident = 0
    weighted = 0.0
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5" or not cols[11].strip():
            continue
        word, conf = cols[11].strip(), float(cols[10])
        box = (int(cols[6]), int(cols[6]) + int(cols[8]), int(cols[9]))  # left, right, height
        if conf >= KEEP:
            lines = paragraphs.setdefault((cols[2], cols[3]), {})
            lines.setdefault(cols[4], []).append((box, word))
        n = sum(ch.isalpha() for ch in word)
        letters += n
        weighted += n * conf
        confident += n if conf >= CONFIDENT else 0
    text = "\n\n".join("\n".join(_join_line(words) for words in lines.values())
                       for lines in paragraphs.values())
    return Reading(text, letters, confident, weighted / letters if letters else 0.0)


def _join_line(words: list) -> str:
    """Words of one line, spaced; none between Chinese (or Thai) characters, or
    their punctuation, that sit closer than GAP line heights."""
    height = sorted(box[2] for box, _ in words)[len(words) // 2]
    out = words[0][1]
    for (before, left), (box, word) in zip(words, words[1:]):
        a, b = left[-1], word[0]
        close = box[0] - before[1] < GAP * height
        unspaced = (_unspaced(a) or _unspaced(b)) and (_unspaced(a) or _punctuation(a)) \
            and (_unspaced(b) or _punctuation(b))
        out += word if close and unspaced else " " + word
    return out


def _unspaced(ch: str) -> bool:
    """Scripts written without spaces between words: Han, kana, Thai, Lao, Khmer, Myanmar."""
    code = ord(ch)
    return (0x2E80 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0xFF00 <= code <= 0xFFEF
            or 0x0E00 <= code <= 0x0EFF or 0x1000 <= code <= 0x109F
            or 0x1780 <= code <= 0x17FF or code >= 0x20000)


def _punctuation(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def _tesseract(image: np.ndarray, dpi: int, args: list[str], deadline: float) -> str:
    """Run the tesseract command on `image` (sent as PGM on stdin); its stdout."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise PageFailed(f"OCR took over {PAGE_S:.0f} s")
    image = np.ascontiguousarray(image)
    pgm = b"P5\n%d %d\n255\n" % (image.shape[1], image.shape[0]) + image.tobytes()
    try:
        run = subprocess.run([tesseract() or "tesseract", "stdin", "stdout", "--dpi", str(dpi),
                              *args], input=pgm, capture_output=True, timeout=left,
                             env={**os.environ, "OMP_THREAD_LIMIT": "1"})
    except subprocess.TimeoutExpired as exc:
        raise PageFailed(f"OCR took over {PAGE_S:.0f} s") from exc
    except OSError as exc:
        raise PageFailed(f"cannot run Tesseract: {exc.strerror or exc}") from exc
    if run.returncode != 0:
        raise PageFailed(f"Tesseract failed: {_tail(run.stderr.decode('utf-8', 'replace'))}")
    return run.stdout.decode("utf-8", "replace")


def _tail(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no message")[:160].rstrip(".")
