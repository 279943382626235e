"""Open a page in headless Chromium, offline, and say what it did: console errors, requests, DOM facts, screenshot."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websocket

START_TIMEOUT_S = 30  # until Chromium says where its DevTools endpoint listens
CALL_TIMEOUT_S = 30  # for any one DevTools answer or event
WIDTH, HEIGHT = 1400, 3000

# What the test reads off the page after its scripts ran: the sign-off section, and where each part was drawn.
FACTS = """(() => {
  const text = el => el ? el.textContent.trim() : null;
  const box = el => { const r = el.getBoundingClientRect();
                      return {top: r.top, left: r.left, width: r.width, height: r.height}; };
  const inside = (a, b) => a.left >= b.left - 0.5 && a.right <= b.right + 0.5 && a.top >= b.top - 0.5
                           && a.bottom <= b.bottom + 0.5;
  const meet = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5
                         && b.top < a.bottom - 0.5;
  // Labels drawn past the plot's edge are cut off; labels drawn over one another cannot be read.
  const cutTexts = svg => { const area = svg.getBoundingClientRect();
    return [...svg.querySelectorAll('text')].filter(t => !inside(t.getBoundingClientRect(), area))
      .map(t => t.textContent); };
  const overlappingTexts = svg => { const texts = [...svg.querySelectorAll('text')];
    return texts.flatMap((a, i) => texts.slice(i + 1).filter(b => meet(a.getBoundingClientRect(),
      b.getBoundingClientRect())).map(b => [a.textContent, b.textContent])); };
  const signoff = document.querySelector('.vllm-gate-signoff');
  const verdict = signoff && signoff.querySelector('.verdict');
  const headerTable = signoff && signoff.querySelector('table');
  const header = {};
  for (const row of headerTable ? headerTable.querySelectorAll('tr') : []) {
    header[text(row.querySelector('th'))] = text(row.querySelector('td'));
  }
  const slo = document.querySelector('table.vllm-gate-slo');
  // Every heading a reader sees, top to bottom, with where it was drawn (hidden ones have no box).
  const headings = [...document.querySelectorAll('h1, h2, h3')].filter(h => h.getClientRects().length > 0)
    .map(h => ({text: text(h), top: box(h).top}));
  return {
    headings,
    verdict: verdict && {text: text(verdict), box: box(verdict)},
    header: headerTable && {fields: header, box: box(headerTable)},
    slo: slo && {rows: [...slo.querySelectorAll('tbody tr')].map(r => [...r.children].map(text)), box: box(slo)},
    // The colour of each cell a release manager reads and signs, with the first text drawn in it.
    colours: Object.fromEntries([...document.querySelectorAll(
      '.vllm-gate-signoff th, .vllm-gate-signoff td, table.vllm-gate-slo th, table.vllm-gate-slo td')]
      .reverse().map(el => [getComputedStyle(el).color, text(el)])),
    svgs: document.querySelectorAll('svg').length,
    plots: [...document.querySelectorAll('svg.vllm-gate-plot')].map(svg => ({
      title: text(svg.querySelector('title')), points: Number(svg.getAttribute('data-points')),
      marks: svg.querySelectorAll('rect[data-count], polyline, circle').length, box: box(svg),
      limits: svg.querySelectorAll('line.limit').length,
      dates: [...svg.querySelectorAll('text.run-date')].map(text),
      cut: cutTexts(svg), overlapping: overlappingTexts(svg)})),
    historyNotes: [...document.querySelectorAll('.vllm-gate-history-note')].map(text),
  };
})()"""


@dataclass(frozen=True)
class Opened:
    """What the page did in the browser."""

    console: list[str]  # console errors, uncaught exceptions and the browser's own error log for the page
    requests: list[str]  # every URL the page asked for besides itself
    facts: dict[str, Any]  # FACTS, evaluated once the page had loaded
    screenshot: bytes  # PNG of the whole page


class _DevTools:
    """The DevTools protocol over one WebSocket: calls wait for their answer, events seen meanwhile are kept."""

    def __init__(self, url: str) -> None:
        # No Origin header: Chromium refuses a WebSocket from an origin it was not told to allow.
        self.ws = websocket.create_connection(url, timeout=CALL_TIMEOUT_S, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") != call_id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"DevTools {method}: {reply['error']}")
            else:
                return reply["result"]

    def wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} from the page within {CALL_TIMEOUT_S} s")
            self.events.append(json.loads(self.ws.recv()))  # recv, too, gives up after CALL_TIMEOUT_S

    def close(self) -> None:
        self.ws.close()


def endpoint(profile: Path, proc: subprocess.Popen[bytes]) -> str:
    """The browser's DevTools WebSocket, from the file Chromium writes once it listens."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        lines = port_file.read_text().splitlines() if port_file.exists() else []
        if len(lines) == 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.1)
    raise RuntimeError(f"Chromium wrote no DevTools endpoint within {START_TIMEOUT_S} s (exit {proc.poll()}); "
                       f"its log: {profile.parent / 'chromium.log'}")


def _console(event: dict[str, Any]) -> str | None:
    """The line an error-level console or log event shows in DevTools; None for anything milder."""
    params = event.get("params", {})
    method = event.get("method")
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return (details.get("exception") or {}).get("description") or details.get("text")
    if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
        return " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        return f"{params['entry']['text']} {params['entry'].get('url', '')}".strip()
    return None


def open_page(chromium: str, page: Path, workdir: Path) -> Opened:
    """Load ``page`` in headless Chromium with every host name resolving to nothing; every process is stopped."""
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a reused profile's would name a closed port
    command = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--host-resolver-rules=MAP * ~NOTFOUND",  # a request the page makes fails here, it never leaves
               f"--user-data-dir={profile}", "--remote-debugging-port=0", f"--window-size={WIDTH},{HEIGHT}",
               "about:blank"]
    with (workdir / "chromium.log").open("wb") as log:
        # A session of its own: the browser's helper processes share its process group, stopped together below.
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        devtools = _DevTools(endpoint(profile, proc))
        try:
            return _load(devtools, page)
        finally:
            with contextlib.suppress(Exception):
                devtools.call("Browser.close")
            devtools.close()
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)  # Browser.close lets it exit by itself
        with contextlib.suppress(ProcessLookupError):
            # Whatever of the browser outlived its close (its crash handler, in a session of its own, exits with it).
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def _load(devtools: _DevTools, page: Path) -> Opened:
    target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
    session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        devtools.call(f"{domain}.enable", session)
    devtools.call("Emulation.setDeviceMetricsOverride", session, width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                  mobile=False)
    devtools.events.clear()  # from here on, only what the page does
    url = page.resolve().as_uri()
    devtools.call("Page.navigate", session, url=url)
    devtools.wait_for("Page.loadEventFired", session)
    # Two animation frames after load: the page's scripts have run and the layout is painted.
    devtools.call("Runtime.evaluate", session, awaitPromise=True,
                  expression="new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    facts = devtools.call("Runtime.evaluate", session, expression=FACTS, returnByValue=True)["result"]["value"]
    size = devtools.call("Page.getLayoutMetrics", session)["cssContentSize"]
    whole = {"x": 0, "y": 0, "width": max(size["width"], WIDTH), "height": size["height"], "scale": 1}
    shot = devtools.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                         clip=whole)["data"]
    events = [e for e in devtools.events if e.get("sessionId") == session]
    requests = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    return Opened(console=[line for e in events if (line := _console(e)) is not None],
                  requests=[r for r in requests if r != url], facts=facts, screenshot=base64.b64decode(shot))


def survivors(profile: Path) -> list[int]:
    """Live processes (zombies aside) whose command line names ``profile``: Chromium's, if any outlived it."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # not a process, or it ended while being read
        if str(profile).encode() in cmdline and state != "Z":
            found.append(int(proc.name))
    return found
