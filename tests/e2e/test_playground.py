"""The playground in a real browser (headless Chromium) against a real server on the bundled model: a reply
streams in over several frames with its numbers, Stop frees the request in the engine, Compare streams two
parameter sets at once, an invalid parameter shows the API's own error, and the template, snippets,
per-token view and a narrow screen work. Screenshots go to TURNOUT_SCREENSHOTS (or pytest's tmp path); the
run prints where."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.e2e.browser import launch, screenshot_dir
from tests.integration.conftest import BUNDLED
from tests.server_thread import ServerThread

QUESTION = "What does the with statement do?"
LONG = 900
"""Tokens of a reply meant to be stopped: seconds of streaming here, far more than the test waits."""
TIMEOUT_MS = 20_000
"""A bound on each wait in the page; a normal run of this file takes about 15 s."""
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def server(bundled_model_dir):
    srv = ServerThread.for_model(bundled_model_dir, BUNDLED, max_num_seqs=8, num_threads=2).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    path = screenshot_dir(tmp_path_factory)
    yield path
    print(f"\nplayground screenshots: {path}")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """The page as a browser opens the server's address: GET / sends it to /playground. Fails the test on
    any error the page logs (a CSP refusal, an exception)."""
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(server.url + "/")
    assert page.url == server.url + "/playground"
    expect(page.locator("body")).to_have_attribute("data-models", "1")
    yield page
    context.close()
    # A 400 the test asked for is logged by Chromium as a failed resource load; nothing else may be.
    assert [e for e in errors if "status of 400" not in e] == []


def lane(page, name="A"):
    return page.locator(f'.lane[data-lane="{name}"]')


def set_params(page, name="A", **values):
    box = lane(page, name).locator("details.params")
    if not box.evaluate("d => d.open"):
        box.locator("summary").click()
    for param, value in values.items():
        field = box.locator(f'[name="{param}"]')
        if isinstance(value, bool):
            field.set_checked(value)
        else:
            field.fill(str(value))


def stat(reply, name) -> str:
    return reply.locator(f'[data-stat="{name}"] .stat-value').inner_text()


def last_reply(page, name="A"):
    return lane(page, name).locator(".msg-assistant").last


def record_frames(page):
    """From now on, at every animation frame: each lane's last reply's text length and state, and where the
    composer and the first reply's stats line sit (for layout jumps)."""
    page.evaluate("""() => {
      window.frames_seen = [];
      const tick = () => {
        const lanes = [...document.querySelectorAll('.lane')].map(lane => {
          const reply = [...lane.querySelectorAll('.msg-assistant')].pop();
          return reply ? {length: reply.querySelector('.choices').textContent.length, state: reply.dataset.state}
                       : {length: 0, state: 'none'};
        });
        const stats = document.querySelector('.msg-assistant .stats');
        window.frames_seen.push({lanes, composer: document.querySelector('.composer').getBoundingClientRect().top,
                                 stats: stats ? stats.getBoundingClientRect().height : null});
        if (!window.stop_frames) requestAnimationFrame(tick);
      };
      window.stop_frames = false;
      requestAnimationFrame(tick);
    }""")


def frames(page) -> list[dict]:
    page.evaluate("() => { window.stop_frames = true; }")
    return page.evaluate("() => window.frames_seen")


def ask(page, text=QUESTION):
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")


def test_a_question_streams_in_over_several_frames_with_its_numbers(page, shots):
    assert page.locator('.lane[data-lane="A"] select.model').input_value() == BUNDLED
    set_params(page, max_tokens=96, min_tokens=80)  # long enough to span frames on a fast machine too
    # Shift+Enter is a new line, not a send.
    page.locator("#input").fill("Two lines:")
    page.locator("#input").press("Shift+Enter")
    page.locator("#input").press_sequentially(QUESTION)
    assert page.locator("#input").input_value() == f"Two lines:\n{QUESTION}"
    assert page.locator(".msg").count() == 0
    record_frames(page)
    page.locator("#input").press("Enter")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", "done")
    seen = frames(page)
    page.screenshot(path=shots / "1-streamed-reply.png")

    lengths = [f["lanes"][0]["length"] for f in seen if f["lanes"][0]["state"] == "streaming"]
    growth = sorted(set(lengths) - {0})
    assert lengths == sorted(lengths), "the text only grows while it streams"
    assert len(growth) >= 3, f"the reply should appear over several frames, saw lengths {growth}"
    assert len({f["composer"] for f in seen}) == 1, "the composer moved while the reply streamed"
    assert len({f["stats"] for f in seen if f["stats"] is not None}) == 1, "the stats line changed size"

    assert lane(page).locator(".msg-user .content").inner_text() == f"Two lines:\n{QUESTION}"
    assert reply.locator(".choice").inner_text().strip()
    assert int(stat(reply, "prompt")) > 10  # the chat template's tokens and the question's
    assert 80 <= int(stat(reply, "completion")) <= 96
    assert stat(reply, "finish") in ("length", "stop")
    assert re.fullmatch(r"\d+ ms", stat(reply, "ttft"))
    assert float(stat(reply, "rate")) > 0


def running(server) -> float:
    metrics = httpx.get(server.url + "/metrics").text
    line = next(line for line in metrics.splitlines()
                if line.startswith(f'turnout_num_requests_running{{model="{BUNDLED}"'))
    return float(line.rsplit(" ", 1)[1])


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_stop_aborts_the_stream_and_the_server_frees_the_request(page, server, shots):
    set_params(page, max_tokens=LONG, min_tokens=LONG)
    ask(page)
    reply = last_reply(page)
    page.wait_for_function("() => document.querySelector('.msg-assistant .choice')?.textContent.length > 40")
    wait_until(lambda: running(server) == 1)
    page.screenshot(path=shots / "2-mid-stream.png")
    page.locator("#stop").click()
    expect(reply).to_have_attribute("data-state", "stopped")
    wait_until(lambda: server.engine().num_running == 0)
    assert running(server) == 0
    assert stat(reply, "finish") == "stopped"
    assert re.fullmatch(r"\d+ streamed", stat(reply, "completion"))  # no usage comes: the tokens counted
    assert float(stat(reply, "rate")) > 0
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()
    page.screenshot(path=shots / "3-stopped.png")


def test_compare_streams_two_parameter_sets_side_by_side(page, shots):
    set_params(page, max_tokens=64, min_tokens=48, temperature=0)
    page.locator("#compare").click()
    expect(lane(page, "B")).to_be_visible()
    assert lane(page, "B").locator("select.model").input_value() == BUNDLED  # one model served: same, other settings
    set_params(page, "B", temperature=1.5, top_k=50, seed=7)
    record_frames(page)
    ask(page)
    expect(last_reply(page, "A")).to_have_attribute("data-state", "done")
    expect(last_reply(page, "B")).to_have_attribute("data-state", "done")
    seen = frames(page)
    page.screenshot(path=shots / "4-compare.png")

    both = [f for f in seen if all(lane["state"] == "streaming" and lane["length"] > 0 for lane in f["lanes"])]
    assert both, "the two answers should stream at the same time"
    texts = [last_reply(page, name).locator(".choice").inner_text() for name in "AB"]
    assert all(text.strip() for text in texts)
    for name in "AB":
        assert 48 <= int(stat(last_reply(page, name), "completion")) <= 64


def test_an_invalid_parameter_shows_the_apis_own_error(page, server, shots):
    set_params(page, temperature=5)
    ask(page)
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", "error")
    written = httpx.post(server.base_url + "/chat/completions", json={
        "model": BUNDLED, "messages": [{"role": "user", "content": QUESTION}], "temperature": 5, "max_tokens": 128,
        "stream": True, "stream_options": {"include_usage": True}})
    assert written.status_code == 400
    box = reply.locator(".api-error")
    expect(box).to_contain_text("HTTP 400")
    assert written.json()["error"]["message"] in box.inner_text()
    assert box.locator(".raw").inner_text() == written.text  # the body, byte for byte as the API wrote it
    page.screenshot(path=shots / "5-api-error.png")


def test_the_template_and_the_snippets_show_what_is_sent(page, server, shots):
    page.locator("#system").fill("Answer in one line.")
    lane(page).locator("button.template").click()
    dialog = page.locator("#dialog")
    expect(dialog).to_be_visible()
    text = dialog.locator(".dialog-text").inner_text()
    assert text == "<|im_start|>system\nAnswer in one line.<|im_end|>\n<|im_start|>assistant\n"
    expect(dialog.locator(".dialog-title")).to_contain_text("tokens of 1024")
    page.screenshot(path=shots / "6-template.png")
    dialog.locator(".close").click()

    lane(page).locator("button.copy").click()
    messages = dialog.locator(".dialog-text").inner_text()
    assert '"content": "Answer in one line."' in messages
    dialog.get_by_role("tab", name="curl").click()
    assert dialog.locator(".dialog-text").inner_text().startswith(f"curl {server.url}/v1/chat/completions")
    dialog.get_by_role("tab", name="Python (openai)").click()
    code = dialog.locator(".dialog-text").inner_text()
    assert f'base_url="{server.url}/v1"' in code and "client.chat.completions.create(" in code
    compile(code, "snippet", "exec")  # valid Python
    page.screenshot(path=shots / "7-snippet.png")


def test_the_per_token_view_shows_the_alternatives_on_hover(page, shots):
    set_params(page, max_tokens=12, min_tokens=12, logprobs=True, top_logprobs=5)
    ask(page)
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", "done")
    tokens = reply.locator(".tok")
    assert tokens.count() == int(stat(reply, "completion")) == 12
    tokens.nth(2).hover()
    tooltip = page.locator("#tooltip")
    expect(tooltip).to_be_visible()
    assert tooltip.locator("tr").count() == 5
    page.screenshot(path=shots / "8-token-view.png")


def test_a_json_schema_reply_and_a_conversation_edited_deleted_and_cleared(page):
    set_params(page, max_tokens=8)
    page.locator('[name="response_format.type"]').select_option("json_schema")
    page.locator('[name="response_format.schema"]').fill('{"type": "string", "enum": ["yes", "no"]}')
    ask(page, "Is a tuple immutable?")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", "done")
    assert json.loads(reply.locator(".choice").inner_text()) in ("yes", "no")  # constrained decoding
    assert stat(reply, "finish") == "stop"

    user = lane(page).locator(".msg-user")
    user.hover()
    user.get_by_role("button", name="Edit").click()
    user.locator("textarea.editor").fill("Is a list mutable?")
    user.get_by_role("button", name="Save").click()
    lane(page).locator(".msg-assistant").hover()
    lane(page).locator(".msg-assistant").get_by_role("button", name="Delete").click()
    lane(page).locator("button.copy").click()
    sent = json.loads(page.locator("#dialog .dialog-text").inner_text())
    assert sent == [{"role": "user", "content": "Is a list mutable?"}]
    page.locator("#dialog .close").click()
    page.locator("#clear").click()
    assert lane(page).locator(".msg").count() == 0


def test_a_narrow_screen_has_no_sideways_scroll(browser, server, shots):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(server.url + "/playground")
    expect(page.locator("body")).to_have_attribute("data-models", "1")
    page.locator("#compare").click()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    page.screenshot(path=shots / "9-narrow.png", full_page=True)
    context.close()


@pytest.fixture(scope="module")
def keyed_server():
    from server.keys import ApiKey, KeyRing, hash_key
    from server.router import Router
    from tests.integration.test_openapi_keys import KEY, Silent

    router = Router({"silent": Silent()}, keys=KeyRing([ApiKey(name="page", hash=hash_key(KEY))]))
    srv = ServerThread.for_router(router).start()
    srv.key = KEY
    yield srv
    srv.stop()


def test_with_api_keys_the_page_says_so_and_works_once_given_one(browser, keyed_server, shots):
    context = browser.new_context(viewport={"width": 1280, "height": 600})
    page = context.new_page()
    page.goto(keyed_server.url + "/playground")
    notice = page.locator("#notice")
    expect(notice).to_contain_text("HTTP 401")
    expect(notice).to_contain_text("missing API key")
    page.screenshot(path=shots / "10-key-needed.png")
    page.locator("#api-key").fill(keyed_server.key)
    page.locator("#api-key").press("Enter")  # a change event: the list is fetched again, with the key
    expect(page.locator("body")).to_have_attribute("data-models", "1")
    expect(notice).to_be_hidden()
    assert page.locator('.lane[data-lane="A"] select.model').input_value() == "silent"
    # the published ranges needed the key too (GET /openapi.json): read now
    assert "0 ≤ x ≤ 2" in lane(page).locator('[data-param="temperature"] small').text_content()
    lane(page).locator("button.copy").click()
    page.get_by_role("tab", name="curl").click()
    snippet = page.locator("#dialog .dialog-text").inner_text()
    assert '"Authorization: Bearer $TURNOUT_API_KEY"' in snippet and keyed_server.key not in snippet
    context.close()


@pytest.fixture(scope="module")
def adapter_server(bundled_model_dir, tmp_path_factory):
    """The bundled model and a LoRA adapter of it (random B: it changes the answers), served unmerged."""
    from backends.hf.backend import HFBackend
    from backends.hf.config import HFEngineConfig
    from tests.integration.test_lora_serving import make_adapter

    adapter = make_adapter(bundled_model_dir, tmp_path_factory.mktemp("adapter") / "tiny-lora", seed=3)
    config = HFEngineConfig(model=str(bundled_model_dir), served_model_name=BUNDLED, max_num_seqs=8,
                            num_threads=2, adapters=(("tiny-lora", str(adapter)),))
    srv = ServerThread({BUNDLED: HFBackend(config)}).start()
    yield srv
    srv.stop()


def test_compare_a_model_with_its_lora_adapter(browser, adapter_server, shots):
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    page = context.new_page()
    page.goto(adapter_server.url + "/playground")
    expect(page.locator("body")).to_have_attribute("data-models", "2")
    options = lane(page).locator("select.model option").all_inner_texts()
    assert options == [BUNDLED, f"tiny-lora (adapter of {BUNDLED})"]
    set_params(page, max_tokens=24, temperature=0)
    page.locator("#compare").click()
    assert lane(page, "B").locator("select.model").input_value() == "tiny-lora"  # the other served model
    ask(page)
    for name in "AB":
        expect(last_reply(page, name)).to_have_attribute("data-state", "done")
    texts = [last_reply(page, name).locator(".choice").inner_text() for name in "AB"]
    assert all(texts) and texts[0] != texts[1], texts  # same settings, greedy: the adapter is what differs
    page.screenshot(path=shots / "11-compare-adapter.png")
    context.close()
