"""The page in a real browser: upload a PDF, ask, click a citation, see the highlighted passage."""

from __future__ import annotations

import json
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


def run_server(pack_config, tmp_path, **env):
    """`rag serve` on a free loopback port (offline pack); yields its URL."""
    port = free_port()
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
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
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


@pytest.fixture
def one_at_a_time(pack_config, tmp_path):
    """A server that takes one question at a time, over the demo corpus."""
    subprocess.run([sys.executable, "-m", "rag.cli", "ingest", str(CORPORA), "-q", "--offline",
                    "--db", str(tmp_path / "db")], cwd=ROOT, env=offline_env(pack_config),
                   check=True, capture_output=True)
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
        with urllib.request.urlopen(one_at_a_time + "/health", timeout=5) as r:
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
        with urllib.request.urlopen(one_at_a_time + "/health", timeout=5) as r:
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
