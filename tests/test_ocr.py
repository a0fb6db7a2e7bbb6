"""OCR of scanned PDF pages (ingest/ocr.py) on real pages, read back by the real Tesseract.

The scans are made here from real text: the demo corpus's PDF pages, and pages that
Chromium prints with Noto fonts in Chinese, Thai, Arabic and Hindi. Each page is drawn
to a grey image at 300 dpi and the images are saved as a PDF (Pillow, JPEG inside), so
nothing of the text layer is left. Character error rates (CER) are printed (`-s`) and
recorded as test properties; English must stay within 5%.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import pytest
from conftest import CORPORA

from ingest import ocr
from ingest.errors import LoadError
from ingest.loaders import iter_load, load
from rag.cli.bench.ocr import cer

pdfium = pytest.importorskip("pypdfium2")
Image = pytest.importorskip("PIL.Image")

WHY_NOT = ocr.unavailable("auto")
needs_ocr = pytest.mark.skipif(bool(WHY_NOT), reason=f"no OCR here: {WHY_NOT}"
                               " (scripts/setup.sh installs Tesseract and its packs)")
CHROMIUM = "/usr/bin/chromium"
ENGLISH = [CORPORA / "aurora-observatory.pdf", CORPORA / "greenway-annual-report-2025.pdf"]
ENGLISH_MAX_CER = 0.05

# Written for these tests; each is printed on one page in the font named.
SCRIPTS = {
    "chi_sim": ("zh-Hans", "Noto Sans CJK SC", "城市图书馆位于河边的老仓库里，去年春天重新开放。"
                "馆内共有三层：一楼是儿童阅览区和咖啡角，二楼收藏地方历史资料和旧报纸，三楼则是"
                "安静的自习室。图书馆每天上午九点开门，晚上九点关门，周一休息。读者可以用身份证"
                "免费办理借书证，每次最多借十本书，借期为三十天。"),
    "chi_tra": ("zh-Hant", "Noto Sans CJK TC", "城市圖書館位於河邊的舊倉庫裡，去年春天重新開放。"
                "館內共有三層：一樓是兒童閱覽區和咖啡角，二樓收藏地方歷史資料和舊報紙，三樓則是"
                "安靜的自習室。圖書館每天上午九點開門，晚上九點關門，週一休息。"),
    "tha": ("th", "Noto Sans Thai", "ตลาดน้ำแห่งนี้เปิดทุกวันเสาร์และวันอาทิตย์ ตั้งแต่เวลาเจ็ดโมงเช้า"
            "จนถึงบ่ายสามโมง พ่อค้าแม่ค้าพายเรือนำผลไม้ ขนมไทย และอาหารพื้นบ้านมาขายให้นักท่องเที่ยว "
            "ผู้มาเยือนสามารถนั่งเรือชมคลองและบ้านเรือนริมน้ำได้ในราคาคนละห้าสิบบาท"),
    "ara": ("ar", "Noto Naskh Arabic", "تقع المكتبة العامة في وسط المدينة بالقرب من الحديقة "
            "الكبيرة. تفتح المكتبة أبوابها كل يوم من الساعة التاسعة صباحا حتى الساعة الثامنة "
            "مساء، ما عدا يوم الجمعة. تضم المكتبة أكثر من خمسين ألف كتاب باللغتين العربية "
            "والإنجليزية، بالإضافة إلى قاعة للقراءة وقسم خاص للأطفال."),
    "hin": ("hi", "Noto Sans Devanagari", "हमारे गाँव के पास एक छोटी नदी बहती है। गर्मियों में बच्चे "
            "शाम को नदी के किनारे खेलते हैं और बड़े लोग पेड़ों की छाँव में बैठकर बातें करते हैं। हर "
            "साल कार्तिक के महीने में यहाँ एक मेला लगता है, जिसमें आसपास के गाँवों से हज़ारों लोग "
            "आते हैं।"),
}
UNSPACED = ("chi_sim", "chi_tra", "tha")  # written without spaces between words
OTHER_MAX_CER = 0.15  # a sanity bound: the wrong pack or garbage reads at 0.3 and more


def scan(source: Path, dest: Path, *, dpi: int = 300, rotate: float = 0, noise: float = 0,
         quality: int = 75) -> Path:
    """An image-only copy of the PDF `source`: each page drawn in grey, turned by `rotate`
    degrees, with Gaussian `noise` (grey levels), saved as JPEG of `quality`."""
    import numpy as np

    rng = np.random.default_rng(7)
    images = []
    for page in pdfium.PdfDocument(str(source)):
        image = page.render(scale=dpi / 72, grayscale=True).to_pil()
        image = image.rotate(rotate, expand=True, fillcolor=255, resample=Image.BILINEAR)
        if noise:
            pixels = np.asarray(image, dtype=np.float32)
            pixels = pixels + rng.normal(0, noise, pixels.shape)
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        images.append(image)
    images[0].save(dest, save_all=True, append_images=images[1:], resolution=dpi,
                   quality=quality)
    return dest


def image_pdf(dest: Path, images: list) -> Path:
    images[0].save(dest, save_all=True, append_images=images[1:], resolution=300)
    return dest


def print_page(html: str, dest: Path) -> Path:
    """Chromium's print of `html` to a PDF (a real text layer, real shaping)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no browser at {CHROMIUM} (scripts/setup.sh --dev installs it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page()
        page.set_content(html)
        page.evaluate("document.fonts.ready")
        page.pdf(path=str(dest), format="A4")
        browser.close()
    return dest


# -- English: the demo corpus, scanned ---------------------------------------------------

@needs_ocr
def test_english_scans_read_within_five_percent_cer(tmp_path, record_property):
    scans = {scan(pdf, tmp_path / f"scan-{pdf.name}"): load(pdf) for pdf in ENGLISH}
    # An office scanner's page: 200 dpi, a little askew, noisy, strong JPEG.
    scans[scan(ENGLISH[0], tmp_path / "office-scan.pdf", dpi=200, rotate=1.5, noise=12,
               quality=60)] = load(ENGLISH[0])
    results = dict(iter_load(list(scans), timeout_s=60, workers=2))
    rates = []
    for path, original in scans.items():
        doc = results[path]
        assert not isinstance(doc, Exception), doc
        assert doc.ocr_pages == tuple(range(1, len(original.pages) + 1)), path.name
        assert doc.empty_pages == 0
        for page, read in zip(original.pages, doc.pages):
            rate = cer(page.text, read.text)
            rates.append(rate)
            print(f"{path.name} page {page.number}: CER {rate:.4f}")
            assert rate <= ENGLISH_MAX_CER, (path.name, page.number, read.text)
    record_property("english_cer_max", max(rates))


# -- other scripts: printed with Noto fonts, then scanned --------------------------------

@needs_ocr
@pytest.mark.slow
@pytest.mark.parametrize("pack", list(SCRIPTS))
def test_other_scripts_read_with_their_pack_and_report_cer(pack, tmp_path, record_property):
    if pack not in ocr.installed_languages():
        pytest.skip(f"Tesseract pack {pack} is not installed")
    lang, font, text = SCRIPTS[pack]
    direction = "rtl" if pack == "ara" else "ltr"
    html = (f'<html lang="{lang}" dir="{direction}"><head><meta charset="utf-8"><style>'
            f'body {{ font-family: "{font}"; font-size: 13pt; margin: 2cm; }}</style></head>'
            f"<body><p>{text}</p></body></html>")
    printed = print_page(html, tmp_path / f"{pack}.pdf")
    doc = load(scan(printed, tmp_path / f"scan-{pack}.pdf"))
    assert doc.ocr_pages == (1,)
    rate = cer(text, doc.pages[0].text, spaces=pack not in UNSPACED)
    print(f"{pack}: CER {rate:.4f}")
    record_property(f"{pack}_cer", rate)
    assert rate <= OTHER_MAX_CER, doc.pages[0].text


# -- only pages without a text layer ----------------------------------------------------

@needs_ocr
def test_a_page_with_a_text_layer_is_never_ocrd(tmp_path):
    from pypdf import PdfReader, PdfWriter

    text_pdf = ENGLISH[0]
    scanned = scan(ENGLISH[1], tmp_path / "scanned.pdf")
    writer = PdfWriter()
    writer.add_page(PdfReader(text_pdf).pages[0])
    writer.add_page(PdfReader(scanned).pages[0])
    mixed = tmp_path / "mixed.pdf"
    with mixed.open("wb") as out:
        writer.write(out)
    started = []
    doc = load(mixed, on_ocr_page=started.append)
    assert started == [2] and doc.ocr_pages == (2,) and doc.empty_pages == 0
    assert doc.pages[0].text == load(text_pdf).pages[0].text
    assert "Greenway" in doc.pages[1].text
    plain = []
    assert load(text_pdf, on_ocr_page=plain.append).ocr_pages == () and plain == []


# -- refusals ---------------------------------------------------------------------------

@needs_ocr
def test_blank_and_picture_scans_are_refused_with_what_ocr_found(tmp_path):
    from PIL import ImageDraw

    blank = Image.new("L", (2480, 3508), 250)
    picture = Image.new("L", (2480, 3508), 255)
    draw = ImageDraw.Draw(picture)
    draw.ellipse((600, 800, 1800, 2000), outline=0, width=12)
    draw.line((300, 2600, 2200, 3100), fill=40, width=30)
    with pytest.raises(LoadError) as info:
        load(image_pdf(tmp_path / "blank.pdf", [blank]))
    assert str(info.value) == ("no text layer on its one page, and OCR found no legible"
                               " text: blank")
    with pytest.raises(LoadError) as info:
        load(image_pdf(tmp_path / "two.pdf", [blank, picture]))
    assert str(info.value) == ("no text layer on any of 2 pages, and OCR found no legible"
                               " text: 1 blank, 1 with marks but no legible words")


def test_without_tesseract_a_scan_is_refused_saying_so(tmp_path, monkeypatch):
    blank = image_pdf(tmp_path / "scan.pdf", [Image.new("L", (850, 1100), 255)])
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))  # the parser workers' too
    [(_, result)] = list(iter_load([blank], timeout_s=60, workers=1, ocr_languages="auto"))
    assert str(result) == ("no text layer on its one page (scanned? OCR needs Tesseract,"
                           " which is not installed)")


def test_ocr_off_leaves_scans_as_before(tmp_path):
    blank = image_pdf(tmp_path / "scan.pdf", [Image.new("L", (850, 1100), 255)])
    with pytest.raises(LoadError, match=r"^no text layer on its one page \(scanned\? OCR is off"):
        load(blank, ocr_languages="off")


@needs_ocr
def test_a_missing_pack_is_named(tmp_path):
    blank = image_pdf(tmp_path / "scan.pdf", [Image.new("L", (850, 1100), 255)])
    with pytest.raises(LoadError, match=r"OCR language xxx is not installed \(installed: "):
        load(blank, ocr_languages="eng+xxx")


# -- time limit and layout --------------------------------------------------------------

@needs_ocr
def test_the_time_limit_grows_with_the_pages_ocr_reads(tmp_path):
    # Seven scanned pages take several seconds of OCR anywhere; the plain limit is 2 s.
    scans = [scan(pdf, tmp_path / f"scan-{pdf.name}") for pdf in ENGLISH]
    results = dict(iter_load(scans, timeout_s=2, workers=1))
    assert [len(results[s].ocr_pages) for s in scans] == [4, 3], results


@needs_ocr
def test_a_hung_ocr_page_is_cut_off_and_named(tmp_path, monkeypatch):
    # A stand-in engine that knows its packs and then never answers, like a hung Tesseract.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tesseract"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --list-langs ] && { echo 'List of available"
                    " languages (1):'; echo eng; exit 0; }\nexec sleep 600\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("ingest.loaders.OCR_PAGE_S", 2.0)
    page = scan(ENGLISH[0], tmp_path / "scan.pdf")
    [(_, result)] = list(iter_load([page], timeout_s=1, workers=1))
    assert re.fullmatch(r"timed out after \d+ s \(OCR of page 1 took over 2 s\)", str(result))


@needs_ocr
def test_a_page_scanned_sideways_is_turned_upright(tmp_path):
    if "osd" not in ocr.installed_languages():
        pytest.skip("Tesseract's script detection (osd) is not installed")
    original = load(ENGLISH[0]).pages[0].text
    doc = load(scan(ENGLISH[0], tmp_path / "sideways.pdf", rotate=90))
    assert cer(original, doc.pages[0].text) <= ENGLISH_MAX_CER


def test_tesseract_tsv_becomes_lines_and_paragraphs():
    rows = ["level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight"
            "\tconf\ttext"]

    def word(block, par, line, left, width, conf, text, height=40):
        rows.append(f"5\t1\t{block}\t{par}\t{line}\t1\t{left}\t0\t{width}\t{height}\t{conf}\t{text}")

    word(1, 1, 1, 0, 80, 96, "Harbour")
    word(1, 1, 1, 100, 60, 91, "tides")
    word(1, 1, 2, 0, 40, 95, "图书")
    word(1, 1, 2, 45, 40, 93, "馆")
    word(1, 1, 2, 90, 20, 90, ",")
    word(1, 1, 2, 115, 40, 92, "开放")
    word(1, 1, 2, 200, 40, 92, "今天")  # a gap wider than the line is high: a space
    word(1, 2, 1, 0, 300, 3, "|||||||")  # a barcode's "word"
    word(2, 1, 1, 0, 50, 88, "Ebb.")
    reading = ocr.parse_tsv("\n".join(rows))
    assert reading.text == "Harbour tides\n图书馆,开放 今天\n\nEbb."
    assert reading.legible and reading.confident == reading.letters == 22
    assert not ocr.parse_tsv(rows[0] + "\n" + rows[-2]).legible


# -- the store and search ---------------------------------------------------------------

@needs_ocr
@pytest.mark.slow
def test_ocr_pages_are_stored_and_search_hits_on_them_say_ocr(runtime, tmp_path):
    import rag
    from ingest import ingest_paths

    folder = tmp_path / "docs"
    folder.mkdir()
    scanned = scan(ENGLISH[0], folder / "aurora-scan.pdf")
    shutil.copy(ENGLISH[1], folder / ENGLISH[1].name)
    report = ingest_paths([folder], runtime)
    assert report.counts()["ingested"] == 2, report.to_json()
    records = {Path(r.path).name: r for r in runtime.store.documents.list()}
    assert records[scanned.name].ocr_pages == (1, 2, 3, 4)
    assert records[ENGLISH[1].name].ocr_pages == ()
    hits = rag.search("Aurora observatory telescope", runtime, k=6)
    scanned_hits = [p for p in hits if p.doc_id == records[scanned.name].id]
    assert scanned_hits and all(p.ocr for p in scanned_hits)
    assert rag.source_json(1, scanned_hits[0])["ocr"] is True
    other = rag.search("Greenway annual report 2025", runtime, k=6)
    text_hits = [p for p in other if p.doc_id == records[ENGLISH[1].name].id]
    assert text_hits and not any(p.ocr for p in text_hits)
