"""The page in a real browser: upload a PDF, ask, click a citation, see the highlighted passage."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import CORPORA, ROOT

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_env(config) -> dict:
    import os

    return dict(os.environ, RAG_MODELS="pack", RAG_CACHE_DIR=str(config.cache_dir),
                RAG_EMBEDDER=config.embedder, RAG_GENERATOR=config.generator)


def run_server(pack_config, tmp_path, key="", **env):
    """`rag serve` on a free loopback port (offline pack), with `key` as its API key when
    given; yields its URL."""
    port = free_port()
    if key:
        env["RAG_API_KEY"] = key
    probe = {"Authorization": f"Bearer {key}"} if key else {}
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "serve", "--port", str(port),
                             "--offline", "--db", str(tmp_path / "db")],
                            cwd=ROOT, env=dict(offline_env(pack_config), **env), stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"server exited {proc.returncode}: {log.read()[-2000:]}")
            try:
                with urllib.request.urlopen(urllib.request.Request(url + "/health",
                                                                   headers=probe),
                                            timeout=2) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not answer /health")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def server(pack_config, tmp_path):
    yield from run_server(pack_config, tmp_path)


def ingest_corpus(pack_config, db) -> None:
    """The demo corpus into the store `db`, by the real `rag ingest`."""
    subprocess.run([sys.executable, "-m", "rag.cli", "ingest", str(CORPORA), "-q", "--offline",
                    "--db", str(db)], cwd=ROOT, env=offline_env(pack_config), check=True,
                   capture_output=True, timeout=600)


@pytest.fixture
def one_at_a_time(pack_config, tmp_path):
    """A server that takes one question at a time, over the demo corpus."""
    ingest_corpus(pack_config, tmp_path / "db")
    yield from run_server(pack_config, tmp_path, RAG_MAX_RUNNING="1", RAG_MAX_WAITING="0")


def test_upload_ask_and_open_a_citation(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            expect(page.locator("footer")).to_contain_text("Built with Llama")

            page.set_input_files("#file-input", str(CORPORA / "aurora-observatory.pdf"))
            expect(page.locator("#uploads .status.done")).to_have_text("ready", timeout=180_000)
            row = page.locator("#library li").filter(has_text="aurora-observatory.pdf")
            expect(row).to_have_count(1, timeout=30_000)
            expect(row.locator(".status")).to_have_text("ready")

            page.fill("#question", "When was the Aurora observatory completed?")
            page.press("#question", "Enter")
            chip = page.locator("#answer .chip").first
            expect(chip).to_be_visible(timeout=240_000)
            expect(page.locator("#sources li").first).to_be_visible()
            chip.click()

            panel = page.locator("#panel")
            expect(panel).to_be_visible()
            expect(page.locator("#panel-page")).to_contain_text("Page 1")
            mark = panel.locator("mark")
            expect(mark).to_have_count(1)
            assert mark.inner_text().strip()
            link = page.locator("#panel-open")
            expect(link).to_have_text("Open page 1")
            assert link.get_attribute("href").endswith("/file#page=1")
            page.screenshot(path=str(tmp_path / "answer.png"), full_page=True)

            page.keyboard.press("Escape")
            expect(panel).to_be_hidden()
            assert not errors, errors
        finally:
            browser.close()


def test_a_busy_server_says_so_on_the_page(one_at_a_time):
    import threading

    from playwright.sync_api import expect, sync_playwright

    def long_question() -> None:  # holds the one place until it has streamed its answer
        body = json.dumps({"question": "Tell me everything about the Aurora observatory.",
                           "stream": True}).encode()
        request = urllib.request.Request(one_at_a_time + "/api/ask", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                response.read()
        except Exception:  # noqa: BLE001 - the server stops mid-answer when the test ends
            pass

    holder = threading.Thread(target=long_question, daemon=True)
    holder.start()
    deadline = time.monotonic() + 120
    while True:  # wait until the server counts it
        with urllib.request.urlopen(one_at_a_time + "/health", timeout=60) as r:
            if json.load(r)["questions"] == 1:
                break
        assert time.monotonic() < deadline, "the first question never started"
        time.sleep(0.1)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(one_at_a_time + "/")
            page.fill("#question", "When was the Aurora observatory completed?")
            page.press("#question", "Enter")
            answer = page.locator("#answer")
            expect(answer).to_contain_text("busy", timeout=60_000)
            expect(answer).to_contain_text("retry in")
        finally:
            browser.close()


def test_a_client_that_leaves_mid_answer_frees_its_place(one_at_a_time):
    """Closing the connection cancels the generation: the engine's own count of running
    sequences drops to 0 and the one place is free for the next question."""
    body = json.dumps({"question": "Tell me everything about the Aurora observatory.",
                       "stream": True}).encode()
    request = urllib.request.Request(one_at_a_time + "/api/ask", data=body,
                                     headers={"Content-Type": "application/json"})
    response = urllib.request.urlopen(request, timeout=300)
    while not response.readline().startswith(b"event: token"):
        pass
    response.close()  # the browser tab is closed
    deadline = time.monotonic() + 120  # a hang guard, not a speed bound
    while True:
        with urllib.request.urlopen(one_at_a_time + "/health", timeout=60) as r:
            health = json.load(r)
        if health["questions"] == 0 and health["engine"]["running"] == 0:
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    body = json.dumps({"question": "When was the Aurora observatory completed?"}).encode()
    request = urllib.request.Request(one_at_a_time + "/api/ask", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as r:
        assert "1987" in json.load(r)["answer"]


def test_an_answer_no_source_supports_is_marked_on_the_page(pack_config, tmp_path):
    """A stub chat endpoint writes answers of known text: the page marks the sentence no
    source supports, strikes its failed citation, and warns when nothing is supported."""
    from playwright.sync_api import expect, sync_playwright

    from rag.answering import UNSUPPORTED_NOTICE
    from tests.test_answer import UNRELATED, quote_source
    from tests.test_remote import Stub, chunk, send_event, start_events

    def scripted(handler, body):  # one copied, cited sentence and one made up; or nothing true
        user = body["messages"][-1]["content"]
        n, sentence = quote_source(user, "1987")
        text = (f"{sentence[:-1]} [{n}]. {UNRELATED} [{n}]." if "completed" in user[-80:]
                else "The answer is: 2.00%")
        start_events(handler)
        send_event(handler, chunk(text))
        send_event(handler, chunk(finish="stop"))
        send_event(handler, "[DONE]")

    subprocess.run([sys.executable, "-m", "rag.cli", "ingest", "-q", "--offline", "--db",
                    str(tmp_path / "db"), str(CORPORA / "aurora-observatory.pdf")], cwd=ROOT,
                   env=offline_env(pack_config), check=True, capture_output=True)
    with Stub(scripted) as stub, sync_playwright() as p:
        server = run_server(pack_config, tmp_path, RAG_GENERATOR_URL=stub.url)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.goto(next(server) + "/")
            notice = page.locator("#answer-notice")

            page.fill("#question", "When was the Aurora observatory completed?")
            page.press("#question", "Enter")
            marked = page.locator("#answer .sentence.unsupported")
            expect(marked).to_have_count(1, timeout=120_000)
            expect(marked).to_contain_text(UNRELATED)
            expect(marked.locator(".unsupported-badge")).to_have_text("unsupported")
            assert "Not supported" in marked.get_attribute("title")
            expect(marked.locator(".chip.unsupported")).to_have_attribute(
                "title", re.compile(r"^not supported by source \d+$"))
            backed = page.locator("#answer .sentence:not(.unsupported)")
            expect(backed).to_contain_text("1987")
            expect(backed.locator(".chip")).not_to_have_class(re.compile("unsupported"))
            expect(notice).to_be_hidden()

            page.fill("#question", "Tell me about the Aurora observatory.")
            page.press("#question", "Enter")
            expect(notice).to_have_text(UNSUPPORTED_NOTICE, timeout=120_000)
            made_up = page.locator("#answer .sentence.unsupported")
            expect(made_up).to_contain_text("The answer is: 2.00%")
            expect(made_up.locator(".unsupported-badge")).to_be_visible()
            assert page.evaluate("""() => {  // the notice sits above the answer
                const n = document.getElementById("answer-notice");
                return n.nextElementSibling.id === "answer";
            }""")
            page.screenshot(path=str(tmp_path / "unsupported.png"), full_page=True)
        finally:
            browser.close()
            server.close()


# -- the key dialog, the schema page, the source panel, upload rows ----------------------
KEY = "browser-test-key"


@pytest.fixture(scope="module")
def keyed(pack_config, tmp_path_factory):
    """A server with an API key over the demo corpus; uploads past 1 MB are refused."""
    tmp_path = tmp_path_factory.mktemp("keyed")
    ingest_corpus(pack_config, tmp_path / "db")
    yield from run_server(pack_config, tmp_path, key=KEY, RAG_MAX_UPLOAD_MB="1")


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def keyed_page(browser, url, **options):
    """A page that has its key (given once by ?key=, as a link would)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport=options.pop("viewport", {"width": 1360, "height": 900}))
    page.goto(f"{url}/?key={KEY}")
    expect(page.locator("#health")).to_contain_text("document", timeout=60_000)
    return page


def test_the_page_asks_for_the_key_when_the_api_answers_401(keyed, chromium):
    from playwright.sync_api import expect

    page = chromium.new_page()
    page.goto(keyed + "/")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible(timeout=60_000)
    expect(dialog).to_contain_text("needs an API key")
    expect(page.locator("#key-button")).to_have_class(re.compile(r"\bneeded\b"))

    page.fill("#key-input", "wrong")
    page.click("#key-save")
    expect(dialog).to_contain_text("refused this key")

    page.fill("#key-input", KEY)
    page.click("#key-save")
    expect(dialog).to_be_hidden()
    expect(page.locator("#health")).to_contain_text("documents")
    expect(page.locator("#key-button")).to_have_text("API key ✓")
    assert page.evaluate("sessionStorage.getItem('apiKey')") == KEY
    page.reload()  # kept for the tab
    expect(page.locator("#health")).to_contain_text("documents")
    expect(dialog).to_be_hidden()
    expect(page.locator(".help")).to_contain_text("?key=KEY")
    page.close()

    page = keyed_page(chromium, keyed)  # ?key= still works, and leaves the address bar
    assert "key=" not in page.url
    expect(page.locator("#key-dialog")).to_be_hidden()
    page.close()


def test_the_schema_page_lists_the_routes_offline(keyed, chromium):
    from playwright.sync_api import expect

    page = chromium.new_page()
    elsewhere, problems = [], []
    page.on("request", lambda r: r.url.startswith(keyed) or elsewhere.append(r.url))
    page.on("console", lambda m: "Content Security Policy" in m.text
            and problems.append(m.text))
    page.goto(keyed + "/schema")
    expect(page.locator("h1")).to_contain_text("API")
    for method, path in [("POST", "/api/ask"), ("POST", "/api/documents"),
                         ("GET", "/api/jobs/{job_id}"), ("POST", "/api/jobs/{job_id}/cancel"),
                         ("DELETE", "/api/documents/{doc_id}"), ("GET", "/health")]:
        expect(page.locator(".op h3", has_text=re.compile(
            rf"^{method}\s*{re.escape(path)}(\s|$)"))).to_have_count(1)
    expect(page.locator(".op", has_text="POST/api/documents")).to_contain_text("Upload files")
    # The inline style is allowed by the page's CSP (else the method badges are plain text).
    assert page.eval_on_selector(".method.post", "e => getComputedStyle(e).color") == \
        "rgb(255, 255, 255)"
    assert not elsewhere, elsewhere
    assert not problems, problems
    page.close()


@pytest.mark.parametrize("width", [1360, 1000, 700])
def test_an_open_source_leaves_the_ask_button_usable(keyed, chromium, width):
    from playwright.sync_api import expect

    page = keyed_page(chromium, keyed, viewport={"width": width, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.fill("#question", "When was the Aurora observatory completed?")
    page.click("#ask-button")
    source = page.locator("#sources li button").first
    expect(source).to_be_visible(timeout=240_000)
    source.click()
    panel = page.locator("#panel")
    expect(panel).to_be_visible()
    expect(page.locator("#panel-close")).to_be_visible()

    form, box = page.locator("#ask-form").bounding_box(), panel.bounding_box()
    overlap = not (box["x"] >= form["x"] + form["width"] or form["x"] >= box["x"] + box["width"]
                   or box["y"] >= form["y"] + form["height"]
                   or form["y"] >= box["y"] + box["height"])
    assert not overlap, (form, box)
    page.fill("#question", "What do lichens need?")
    # Playwright clicks only a button that would receive the click: a covered one times out.
    page.click("#ask-button", timeout=30_000)
    expect(panel).to_be_hidden()  # the click reached the page: the question is asked
    answer = page.locator("#answer")
    expect(answer).to_have_attribute("aria-busy", "false", timeout=240_000)
    expect(answer).not_to_have_class(re.compile(r"\berror\b"))
    assert not errors, errors
    page.close()


def test_upload_rows_refusals_names_outages_and_cancel(keyed, chromium, tmp_path):
    """Each refused file is a row with its reason and request id; a name already in the
    library gets its own; polls that fail (a restart) are retried, not failed; cancel."""
    from playwright.sync_api import expect

    page = keyed_page(chromium, keyed)
    rows = page.locator("#uploads li")

    big = tmp_path / "big.txt"
    big.write_text("lichen " * 200_000)  # 1.4 MB, past the 1 MB limit
    page.set_input_files("#file-input", str(big))
    refused = rows.filter(has_text="big.txt")
    expect(refused.locator(".status")).to_have_text("failed", timeout=60_000)
    expect(refused.locator(".reason")).to_contain_text("MB")
    expect(refused.locator(".reason .request-id")).to_have_text(re.compile(r"request id \S+"))

    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nMoss grows on the north side of the old stone wall.\n")
    polls = []

    def outage(route):  # the server restarts: no answer, then a 503, then it is back
        polls.append(route.request.url)
        if len(polls) <= 2:
            route.abort()
        else:
            route.fulfill(status=503, json={"error": "starting", "request_id": "r1"})

    page.route(re.compile(r".*/api/jobs/[^/]+$"), outage)
    page.set_input_files("#file-input", str(notes))
    row = rows.first
    expect(row.locator(".status")).to_have_text("waiting for the server", timeout=60_000)
    deadline = time.monotonic() + 120  # a hang guard, not a speed bound
    while len(polls) < 3:
        assert time.monotonic() < deadline, polls
        page.wait_for_timeout(200)
    expect(row.locator(".status")).not_to_have_text("failed")
    page.unroute(re.compile(r".*/api/jobs/[^/]+$"))
    expect(row.locator(".status")).to_have_text("ready", timeout=120_000)
    expect(row.locator(".upload-note")).to_be_hidden()

    notes.write_text("# Other notes\n\nThe lichen survey was repeated in spring.\n")
    page.set_input_files("#file-input", str(notes))  # the same name, other bytes: a new one
    expect(rows.first.locator(".upload-note")).to_have_text("saved as notes (2).md",
                                                             timeout=120_000)
    expect(page.locator("#library li", has_text="notes (2).md")).to_have_count(1)

    notes.write_text("# Newer notes\n\nThe survey found forty species.\n")
    page.check("#replace")
    page.set_input_files("#file-input", str(notes))
    expect(rows.first.locator(".upload-note")).to_have_text(
        "replaced the document of the same name", timeout=120_000)

    # Cancel: the job is held "running" by the poll answers until the page cancels it.
    job = {"id": "held", "filename": "held.md", "status": "running", "stage": "embedding",
           "reason": "", "result": None, "progress": {"stage": "embedding", "done": 1, "total": 4}}
    cancels = []

    def cancel(route):
        cancels.append(route.request.method)
        job["status"] = "cancelled"
        route.fulfill(json=job)

    def accept(route):
        if route.request.method != "POST":
            return route.continue_()
        return route.fulfill(status=202, json={"jobs": [dict(job, status="queued")],
                                               "refused": []})

    page.route("**/api/jobs/held", lambda route: route.fulfill(json=job))
    page.route("**/api/jobs/held/cancel", cancel)
    page.route("**/api/documents", accept)
    held = tmp_path / "held.md"
    held.write_text("held")
    page.set_input_files("#file-input", str(held))
    row = rows.filter(has_text="held.md")
    expect(row.locator(".status")).to_have_text("embedding", timeout=30_000)
    row.get_by_role("button", name="Cancel held.md").click()
    expect(row.locator(".status")).to_have_text("cancelled")
    expect(row.get_by_role("button", name="Cancel held.md")).to_be_hidden()
    assert cancels == ["POST"]
    page.close()


# -- conversations ---------------------------------------------------------------------
FIRST = "When was the Aurora observatory completed?"
FOLLOW_UP = "How fast does the map lichen grow?"
WAIT = 30_000  # for what waits on the server: a hang guard, not a speed bound


def test_a_conversation_keeps_its_turns_and_each_turn_its_sources(pack_config, tmp_path,
                                                                   chromium):
    """Ask, then follow up in the same thread: the follow-up streams below the first answer
    and its chip opens its own source (as stored by the server); after a reload the thread
    is listed and reopens with both turns and working chips; Delete (confirmed) removes it."""
    import threading

    from playwright.sync_api import expect

    from tests.test_answer import quote_source
    from tests.test_remote import Stub, chunk, send_event, start_events

    held = threading.Event()  # the follow-up's answer stops halfway until the test has seen it

    def scripted(handler, body):  # each answer is its source's sentence, cited, word by word
        user = body["messages"][-1]["content"]
        follow_up = "lichen" in user.rsplit("Question: ", 1)[-1]
        n, sentence = quote_source(user, "0.5 millimetres" if follow_up else "1987")
        words = re.findall(r"\S+\s*", f"{sentence[:-1]} [{n}].")
        start_events(handler)
        for word in words:
            send_event(handler, chunk(word))
            if follow_up and word.startswith("millimetres"):
                held.wait(120)
        send_event(handler, chunk(finish="stop"))
        send_event(handler, "[DONE]")

    subprocess.run([sys.executable, "-m", "rag.cli", "ingest", "-q", "--offline", "--db",
                    str(tmp_path / "db"), str(CORPORA / "aurora-observatory.pdf"),
                    str(CORPORA / "lichen-field-notes.md")], cwd=ROOT,
                   env=offline_env(pack_config), check=True, capture_output=True)
    with Stub(scripted) as stub:
        server = run_server(pack_config, tmp_path, RAG_GENERATOR_URL=stub.url)
        url = next(server)
        page = chromium.new_page(viewport={"width": 1360, "height": 900})
        try:
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            expect(page.locator("#threads-empty")).to_be_visible()
            turns, listed = page.locator("#turns .turn"), page.locator("#threads li")

            page.fill("#question", FIRST)
            page.press("#question", "Enter")
            expect(turns.first.locator(".answer .chip")).to_have_count(1, timeout=120_000)
            expect(listed).to_have_count(1, timeout=WAIT)
            expect(listed.first).to_have_class(re.compile(r"\bcurrent\b"))

            page.fill("#question", FOLLOW_UP)
            page.press("#question", "Enter")
            expect(turns).to_have_count(2)
            second = turns.nth(1)
            expect(second.locator(".turn-question")).to_have_text(FOLLOW_UP)
            answer = second.locator(".answer")
            expect(answer).to_contain_text("0.5 millimetres", timeout=120_000)  # not done yet
            expect(answer).to_have_attribute("aria-busy", "true")
            expect(answer.locator(".chip")).to_have_count(0)
            held.set()
            expect(answer.locator(".chip")).to_have_count(1, timeout=60_000)
            expect(answer).to_have_attribute("id", "answer")  # the latest turn is "the answer"
            expect(turns.first.locator(".answer")).to_contain_text("1987")
            assert turns.first.bounding_box()["y"] < second.bounding_box()["y"] \
                < page.locator("#ask-form").bounding_box()["y"]
            expect(listed).to_have_count(1)  # the follow-up was asked in the same thread

            thread_id = listed.first.get_attribute("data-thread")
            with urllib.request.urlopen(f"{url}/api/threads/{thread_id}", timeout=60) as r:
                stored = json.load(r)
            assert [t["question"] for t in stored["turns"]] == [FIRST, FOLLOW_UP]

            def check_chips():  # each turn's chip opens that turn's own source
                for turn, shown in zip(stored["turns"], [turns.first, turns.nth(1)]):
                    chip = shown.locator(".answer .chip").first
                    marker = int(chip.inner_text())
                    source = turn["answer"]["sources"][marker - 1]
                    citation = next(c for c in turn["answer"]["citations"]
                                    if c["marker"] == marker)
                    chip.click()
                    expect(page.locator("#panel")).to_be_visible()
                    expect(page.locator("#panel-title")).to_have_text(
                        source["title"] or source["path"])
                    assert page.locator("#panel-text").text_content() == source["text"]
                    start, end = citation["span"]
                    assert page.locator("#panel-text mark").text_content() == \
                        source["text"][start:end]
                assert "lichen" in page.locator("#panel-text").text_content().lower()

            check_chips()
            page.screenshot(path=str(tmp_path / "thread.png"), full_page=True)

            page.reload()
            expect(listed).to_have_count(1, timeout=WAIT)
            expect(listed.first).to_contain_text(FIRST)
            expect(turns).to_have_count(0)
            listed.first.locator(".thread-open").click()
            expect(turns).to_have_count(2, timeout=WAIT)
            expect(page.locator("#turns .turn-question")).to_have_text([FIRST, FOLLOW_UP])
            check_chips()
            page.keyboard.press("Escape")

            delete = listed.first.get_by_role("button", name=re.compile("^Delete conversation"))
            page.once("dialog", lambda d: d.dismiss())
            delete.click()
            expect(listed).to_have_count(1)
            page.once("dialog", lambda d: d.accept())
            delete.click()
            expect(listed).to_have_count(0, timeout=WAIT)
            expect(turns).to_have_count(0)  # the open thread is gone: a new conversation
            with urllib.request.urlopen(f"{url}/api/threads", timeout=60) as r:
                assert json.load(r)["threads"] == []
            assert not errors, errors
        finally:
            held.set()
            page.close()
            server.close()
