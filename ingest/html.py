"""HTML to main text: no scripts, styles, navigation or cookie banners; title and headings kept.

A streaming pass with the standard library's parser: elements that are never
content (script, nav, footer, hidden, cookie/consent boxes...) are skipped with
everything inside them; block elements become paragraph breaks. When the page
has a <main> or <article> with real text, only that is kept.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIP = {"script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside",
         "form", "button", "select", "iframe", "object", "canvas", "dialog", "menu", "head"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
         "source", "track", "wbr"}
_BLOCK = {"p", "div", "section", "article", "main", "ul", "ol", "table", "blockquote", "pre",
          "figure", "figcaption", "dl", "hr", "caption", "h1", "h2", "h3", "h4", "h5", "h6",
          "address", "details", "summary"}
# A line break, not a paragraph: lists and tables stay together.
_LINE = {"br", "li", "tr", "dt", "dd"}
_CELL = {"td", "th"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BOILERPLATE = re.compile(r"cookie|consent|gdpr|banner|newsletter|subscribe|share|social|"
                          r"breadcrumb|sidebar|advert|promo|popup|modal|related|comments?\b|"
                          r"navbar|site-nav|skip-link|masthead", re.IGNORECASE)
_CONTENTISH = re.compile(r"content|article|main|body|post|entry|story|text", re.IGNORECASE)
_WS = re.compile(r"[ \t\n\r\f\v\u00a0]+")


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.skip: list[str] = []  # open skipped elements
        self.parts: list[str] = []  # text of the whole body
        self.main_parts: list[str] | None = None  # text inside <main>/<article>
        self.main_depth = 0
        self.title = ""
        self.og_title = ""
        self.in_title = False
        self.heading: tuple[int, list[str], int, int] | None = None
        self.headings: list[tuple[int, str, int]] = []  # (level, text, index in parts)
        self.main_headings: list[tuple[int, str, int]] = []
        self.pre = 0  # depth of <pre>, where line breaks are content

    def _skipped(self, tag: str, attrs: dict) -> bool:
        if tag in _SKIP:
            return True
        if "hidden" in attrs or attrs.get("aria-hidden") == "true":
            return True
        style = (attrs.get("style") or "").replace(" ", "").lower()
        if "display:none" in style or "visibility:hidden" in style:
            return True
        if attrs.get("role") in ("navigation", "banner", "contentinfo", "dialog", "search"):
            return True
        if tag in ("body", "main", "article"):
            return False
        # "cookie-banner" is chrome; "grid-content-sidebar" wraps the article on some sites.
        tokens = f"{attrs.get('id') or ''} {attrs.get('class') or ''}".split()
        return any(_BOILERPLATE.search(t) and not _CONTENTISH.search(t) for t in tokens)

    def handle_starttag(self, tag, attrs):
        attrs = {k: (v or "") for k, v in attrs}
        if tag == "meta" and attrs.get("property") == "og:title":
            self.og_title = attrs.get("content", "")
        if tag == "title" and not self.skip_head_title():
            self.in_title = True
        if self.skip:
            if tag not in _VOID:
                self.skip.append(tag)
            return
        if tag in _VOID and tag not in ("br", "hr"):
            return
        if self._skipped(tag, attrs):
            if tag not in _VOID:
                self.skip.append(tag)
            return
        if tag == "pre":
            self.pre += 1
        if tag in ("main", "article"):
            self.main_depth += 1
            if self.main_parts is None:
                self.main_parts = []
        if tag in _BLOCK:
            self._emit("\n\n")
        elif tag in _LINE:
            self._emit("\n")
        elif tag in _CELL:
            self._emit("\t")
        if tag in _HEADINGS:
            self.heading = (_HEADINGS[tag], [], len(self.parts), len(self.main_parts or []))

    def skip_head_title(self) -> bool:
        return bool(self.title)

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if self.skip:
            if tag in self.skip:
                while self.skip and self.skip.pop() != tag:
                    pass
            return
        if tag in _HEADINGS and self.heading:
            level, words, at, main_at = self.heading
            text = " ".join("".join(words).split())
            if text:
                self.headings.append((level, text, at))
                if self.main_depth:
                    self.main_headings.append((level, text, main_at))
            self.heading = None
        if tag in _BLOCK:
            self._emit("\n\n")
        elif tag in _LINE:
            self._emit("\n")
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in ("main", "article") and self.main_depth:
            self.main_depth -= 1

    def handle_data(self, data):
        if self.in_title:
            self.title += data
            return
        if self.skip:
            return
        if self.heading:
            self.heading[1].append(data)
        if self.pre:
            for i, line in enumerate(data.split("\n")):
                if i:
                    self._emit("\n")
                self._emit(line)
        else:
            self._emit(_WS.sub(" ", data))

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        if self.main_depth and self.main_parts is not None:
            self.main_parts.append(text)


_BREAKS = {"\n\n": 3, "\n": 2, "\t": 1}  # paragraph > line > table cell


def _assemble(parts: list[str], marks: list[tuple[int, str, int]]) -> tuple[str, list]:
    """Join text pieces with normalised whitespace (blocks become blank lines, rows lines,
    cells " | "). Returns the text and (offset, heading path) for each section start."""
    out: list[str] = []
    length = 0
    pending = 0  # the strongest break seen since the last text
    heads: list[tuple[int, str]] = []
    stack: list[tuple[int, str]] = []
    mark_at: dict[int, list[tuple[int, str]]] = {}
    for level, text, index in marks:
        mark_at.setdefault(index, []).append((level, text))
    opened: list[tuple[int, str]] = []
    for i, piece in enumerate(parts + [""]):
        opened.extend(mark_at.get(i, []))
        if piece in _BREAKS:
            pending = max(pending, _BREAKS[piece])
            continue
        if not piece.strip():
            if piece and out and not out[-1].endswith((" ", "\n")) and not pending:
                out.append(" ")
                length += 1
            continue
        if out and pending:
            trimmed = out[-1].rstrip(" ")
            length -= len(out[-1]) - len(trimmed)
            out[-1] = trimmed
            sep = {3: "\n\n", 2: "\n", 1: " | "}[pending]
            out.append(sep)
            length += len(sep)
        if not out or pending or out[-1].endswith((" ", "\n")):
            piece = piece.lstrip()
        pending = 0
        for level, text in opened:
            stack = [s for s in stack if s[0] < level] + [(level, text)]
            heads.append((length, " > ".join(t for _, t in stack)))
        opened = []
        out.append(piece)
        length += len(piece)
    text = "".join(out)
    return text.rstrip(), heads


def extract(html: str) -> tuple[str, str, list[tuple[int, str]]]:
    """(title, main text, [(offset of a section in text, heading path)])."""
    parser = _Extractor()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):
        pass  # keep what was parsed before the damage
    use_main = parser.main_parts is not None and len("".join(parser.main_parts).strip()) >= 200
    parts, marks = ((parser.main_parts, parser.main_headings) if use_main
                    else (parser.parts, parser.headings))
    title = " ".join((parser.title or parser.og_title).split())
    if not title and parser.headings:
        title = parser.headings[0][1]
    text, heads = _assemble(parts, marks)
    return title, text, heads
