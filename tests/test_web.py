"""The chat page (`learnft.web.serve`, chapter 10h) in a real headless browser (Debian's Chromium driven by Playwright).

The bundled SmolLM2 is served on a free port of 127.0.0.1 in this process; the test types a question, presses Send,
watches the assistant's message grow (every rendered state recorded by a MutationObserver) until it stops, and checks
the answer names Paris, that no request left 127.0.0.1 and none failed; a screenshot goes to tests/artifacts/web_chat.png.
"""
import socket, time

import pytest
from conftest import ROOT
from test_site import ARGS, CHROMIUM, _open

ART = ROOT/'tests'/'artifacts'

# Every text the last assistant message shows, in order, as the page renders it.
WATCH = """() => {
  window.__states = [];
  const root = document.querySelector('#chat');
  const last = () => { const b = root.querySelectorAll('[data-testid="bot"]'); return b.length ? b[b.length - 1].innerText.trim() : ''; };
  new MutationObserver(() => { const t = last(); if (t && window.__states[window.__states.length - 1] !== t) window.__states.push(t); })
    .observe(root, {subtree: true, childList: true, characterData: true});
}"""


def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def app():
    from learnft.web import serve
    port = _free_port()
    web = serve('smollm2', port=port, block=False)
    yield web, f'http://127.0.0.1:{port}/'
    web.close()


def _settled(page, quiet_s=1.5, timeout_s=30) -> list:
    "Wait until the assistant's message exists and has not changed for `quiet_s`; every state it showed."
    t0, seen, since = time.time(), None, time.time()
    while time.time() - t0 < timeout_s:
        states = page.evaluate('window.__states')
        if states != seen: seen, since = states, time.time()
        elif states and time.time() - since > quiet_s: return states
        time.sleep(0.1)
    raise AssertionError(f'no settled reply after {timeout_s} s; seen: {seen}')


def test_chat_page_streams_an_answer_and_stays_local(app):
    web, url = app
    assert web.server_name == '127.0.0.1' and not web.share
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page, failures = _open(browser, url)
        assert page.locator('#tools input[type=checkbox]').count() == 3     # calculate, solve, search
        assert 'learnft chat' in page.title()
        tokens = page.get_by_label('number input for Max new tokens')
        tokens.fill('32'); tokens.press('Enter')
        page.evaluate(WATCH)
        page.locator('#message textarea').fill('What is the capital of France?')
        page.locator('#send').click()
        page.locator('#chat [data-testid="user"]').wait_for(timeout=10_000)
        states = _settled(page)
        reply = states[-1]
        assert reply and 'Paris' in reply, states
        print(f'{len(states)} states of the reply: {states}')
        assert len(states) >= 2 and all(reply.startswith(s) for s in states[:-1]), f'not streamed: {states}'
        assert page.locator('#chat [data-testid="user"]').inner_text().strip() == 'What is the capital of France?'
        assert page.locator('#message textarea').input_value() == ''
        ART.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ART/'web_chat.png'))
        assert (ART/'web_chat.png').stat().st_size > 10_000
        # The page ends its event stream (server-sent events of the queue) itself once the reply is done: aborted, not failed.
        ended = [f for f in failures if f.startswith(f'FAILED {url}gradio_api/queue/data') and 'ERR_ABORTED' in f]
        assert not [f for f in failures if f not in ended], failures
        page.close(); browser.close()


def test_tools_box_runs_the_agent_loop(monkeypatch):
    "With tools ticked, a send goes through chat.chat_with_tools and the page shows each call with its result, then the answer."
    from learnft import chat, web
    seen = {}
    def fake(model, tok, msgs, registry, system=None, max_new_tokens=96, **sampling):
        seen.update(tools=sorted(registry.tools), msgs=chat.with_system(msgs, system), sampling=sampling)
        return {'answer': 'The answer is 888.', 'stopped': 'answer', 'messages': msgs,
                'trace': [{'step': 1, 'event': 'generate', 'text': '<tool_call>…'}, {'step': 1, 'event': 'tool', 'text': 'calculate({"expression": "37*24"}) -> 888'}]}
    monkeypatch.setattr(chat, 'chat_with_tools', fake)
    respond = web._responder(None, None)
    history = [{'role': 'user', 'content': 'A shop sells 37 boxes with 24 pens each. How many pens?'}]
    out = list(respond(history, 'Be brief.', 64, 0.0, 1.0, 0, 1.0, -1, ['calculate']))
    assert seen['tools'] == ['calculate'] and seen['msgs'][0] == {'role': 'system', 'content': 'Be brief.'} and seen['sampling']['seed'] is None
    assert out[-1][-1] == {'role': 'assistant', 'content': '🔧 `calculate({"expression": "37*24"}) -> 888`\n\nThe answer is 888.'}
    import gradio as gr
    with pytest.raises(gr.Error, match='--with-plugins: got'): list(respond(history, '', 64, 0.0, 1.0, 0, 1.0, -1, ['browse']))
