#!/usr/bin/env python3
"""The desktop window smoke test: drive the real driftless-desktop window through tauri-driver.

Run by scripts/desktop-smoke.sh, which owns the processes (Xvfb, tauri-driver and, through it,
WebKitWebDriver and the app) and passes their addresses in. This file only speaks WebDriver:

  1. open a session on the app binary (tauri-driver launches it under the Xvfb display);
  2. wait until the overview shows live numbers: counter-events_total > 0 and increasing
     between two reads, and the health badge carries a data-state;
  3. screenshot the window into the --screenshot file (desktop-smoke.sh: a build folder);
  4. the title bar says "driftless"; a command outside the window's capability is refused
     and the CSP blocks inline script;
  5. pause all outbound writes with a reason, through the UI's own controls;
  6. the title bar now says PAUSED (the native title the Rust side sets, read from the X
     server, and the page's document.title, which is what WebDriver reports);
  7. close the session.

The WebDriver client is a small keep-alive http.client connection: clients that send
`Connection: close` on every request (urllib) fail a large share of sessions through
tauri-driver. Every wait is bounded. Ends with `N passed, M failed` (printed, or written to
--summary for the calling script to print last); exits 1 on failure.
"""

import argparse
import base64
import http.client
import json
import os
import re
import subprocess
import sys
import time

SEL = "css selector"


class WebDriverError(Exception):
    pass


class WebDriver:
    """Just enough of the W3C WebDriver protocol, over one persistent HTTP/1.1 connection."""

    def __init__(self, host, port, timeout_s):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.conn = None
        self.session = None

    def _connection(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return self.conn

    def request(self, method, path, body=None, timeout_s=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"} if data is not None else {}
        for attempt in (1, 2):
            conn = self._connection()
            conn.timeout = timeout_s or self.timeout_s
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.close_connection()
                if attempt == 2:
                    raise
        try:
            payload = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            raise WebDriverError(f"{method} {path}: HTTP {resp.status}, not JSON: {raw[:200]!r}")
        value = payload.get("value") if isinstance(payload, dict) else None
        if resp.status >= 400 or (isinstance(value, dict) and "error" in value):
            err = value if isinstance(value, dict) else {}
            raise WebDriverError(
                f"{method} {path}: HTTP {resp.status} {err.get('error', '')}: {err.get('message', raw[:300])}"
            )
        return value

    def close_connection(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # Session

    def new_session(self, application, timeout_s):
        caps = {"capabilities": {"alwaysMatch": {"tauri:options": {"application": application}}}}
        value = self.request("POST", "/session", caps, timeout_s=timeout_s)
        self.session = value["sessionId"]
        return value

    def delete_session(self):
        if self.session:
            try:
                self.request("DELETE", f"/session/{self.session}", timeout_s=15)
            finally:
                self.session = None

    def _s(self, path):
        return f"/session/{self.session}{path}"

    # Commands

    def find(self, css):
        """The element's id, or None when there is no such element (yet)."""
        try:
            value = self.request("POST", self._s("/element"), {"using": SEL, "value": css})
        except WebDriverError as e:
            if "no such element" in str(e):
                return None
            raise
        return next(iter(value.values()))

    def text(self, element):
        return self.request("GET", self._s(f"/element/{element}/text"))

    def attribute(self, element, name):
        return self.request("GET", self._s(f"/element/{element}/attribute/{name}"))

    def click(self, element):
        self.request("POST", self._s(f"/element/{element}/click"), {})

    def type_text(self, element, text):
        self.request("POST", self._s(f"/element/{element}/value"), {"text": text})

    def title(self):
        return self.request("GET", self._s("/title"))

    def screenshot_png(self):
        return base64.b64decode(self.request("GET", self._s("/screenshot"), timeout_s=30))


def wait_for(what, fn, timeout_s, every_s=0.5):
    """Poll fn until it returns something truthy; raise with the last value or error otherwise."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        try:
            got = fn()
            if got:
                return got
            last = got
        except WebDriverError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(every_s)


def native_titles(display):
    """Titles of the app's visible top-level X windows, as a title bar would show them.

    GTK also creates a small unmapped "client leader" window named after the binary; only
    real-sized windows count.
    """
    out = subprocess.run(
        ["xwininfo", "-root", "-tree", "-display", display],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    # Lines look like:  0x200003 "driftless": ("driftless-desktop" "Driftless-desktop")  1280x800+0+0  +0+0
    line = re.compile(r'^\s+0x[0-9a-f]+ "(.*)": \("driftless-desktop" [^)]*\)\s+(\d+)x(\d+)', re.M)
    return [m.group(1) for m in line.finditer(out) if int(m.group(2)) >= 100 and int(m.group(3)) >= 100]


class Smoke:
    def __init__(self, args):
        self.args = args
        self.passed = 0
        self.failed = 0
        self.wd = WebDriver("127.0.0.1", args.driver_port, timeout_s=30)

    def check(self, name, fn):
        t0 = time.monotonic()
        try:
            detail = fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            self.failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            return False
        self.passed += 1
        suffix = f" — {detail}" if detail else ""
        print(f"ok   {name} ({time.monotonic() - t0:.1f}s){suffix}", flush=True)
        return True

    def events_total(self):
        el = self.wd.find('[data-testid="counter-events_total"]')
        if el is None:
            return None
        text = self.wd.text(el).strip()
        return int(text) if text.isdigit() else None

    # The steps

    def open_session(self):
        self.wd.new_session(self.args.app, timeout_s=self.args.timeout)
        return f"session {self.wd.session}"

    def live_numbers(self):
        first = wait_for("counter-events_total > 0", lambda: (self.events_total() or 0) > 0 and self.events_total(),
                         self.args.timeout)
        time.sleep(3)
        second = wait_for(
            "counter-events_total to increase",
            lambda: (v := self.events_total()) is not None and v > first and v,
            self.args.timeout,
        )
        health = self.wd.find('[data-testid="health"]')
        if health is None:
            raise AssertionError("no [data-testid=health] element")
        state = self.wd.attribute(health, "data-state")
        if not state:
            raise AssertionError("the health badge has no data-state")
        return f"events_total {first} -> {second}, health {state}"

    def screenshot(self):
        png = self.wd.screenshot_png()
        if not png.startswith(b"\x89PNG"):
            raise AssertionError("the screenshot is not a PNG")
        os.makedirs(os.path.dirname(self.args.screenshot), exist_ok=True)
        with open(self.args.screenshot, "wb") as f:
            f.write(png)
        return f"{self.args.screenshot} ({len(png)} bytes)"

    def locked_down(self):
        """The capability grants only the console's commands, and the CSP refuses inline script."""
        refused = self.wd.request(
            "POST",
            self.wd._s("/execute/async"),
            {
                "script": "const done = arguments[0];"
                "window.__TAURI_INTERNALS__.invoke('plugin:window|set_title', {label: 'main', value: 'x'})"
                ".then(() => done('allowed'), (e) => done('refused: ' + e));",
                "args": [],
            },
        )
        if not str(refused).startswith("refused"):
            raise AssertionError(f"window.set_title outside the capability was {refused!r}")
        inline = self.wd.request(
            "POST",
            self.wd._s("/execute/sync"),
            {
                "script": "const s = document.createElement('script'); s.textContent = 'window.__smokeInline = 1';"
                "document.head.appendChild(s); s.remove(); return window.__smokeInline === 1;",
                "args": [],
            },
        )
        if inline is not False:
            raise AssertionError("an inline <script> ran despite the CSP")
        return "plugin:window|set_title refused; inline <script> blocked"

    def every_screen(self):
        """Each screen in the navigation opens and loads through the window's IPC (a command
        missing from the capability would show as an error on its screen)."""
        ids = self.wd.request(
            "POST",
            self.wd._s("/execute/sync"),
            {
                "script": "return [...document.querySelectorAll('nav a[data-testid^=\"nav-\"]')]"
                ".map(a => a.dataset.testid.slice(4));",
                "args": [],
            },
        )
        if len(ids) < 2:
            raise AssertionError(f"the navigation lists {ids!r}")
        problems = []
        for sid in ids:
            link = wait_for(f"nav-{sid}", lambda sid=sid: self.wd.find(f'[data-testid="nav-{sid}"]'), 15)
            self.wd.click(link)
            root = "health" if sid == "overview" else f"screen-{sid}"
            wait_for(f"[data-testid={root}]", lambda root=root: self.wd.find(f'[data-testid="{root}"]'), 15)
            time.sleep(1.5)
            errors = self.wd.request(
                "POST",
                self.wd._s("/execute/sync"),
                {
                    "script": "return [...document.querySelectorAll('main [role=alert]')]"
                    ".map(e => e.textContent.trim()).filter(t => t);",
                    "args": [],
                },
            )
            if errors:
                problems.append(f"{sid}: {errors}")
        overview = wait_for("nav-overview", lambda: self.wd.find('[data-testid="nav-overview"]'), 15)
        self.wd.click(overview)
        wait_for("the overview again", lambda: self.wd.find('[data-testid="health"]'), 15)
        if problems:
            raise AssertionError("; ".join(problems))
        return f"{len(ids)} screens: {', '.join(ids)}"

    def title_running(self):
        native = wait_for("the native window title", lambda: native_titles(self.args.display), 10)
        if native != ["driftless"]:
            raise AssertionError(f"native window title is {native!r}, expected ['driftless']")
        page = self.wd.title()
        if page != "driftless":
            raise AssertionError(f"document.title (WebDriver title) is {page!r}, expected 'driftless'")
        return f"title bar {native[0]!r}, WebDriver title {page!r}"

    def pause_through_ui(self):
        button = wait_for("[data-testid=pause-global]", lambda: self.wd.find('[data-testid="pause-global"]'), 15)
        self.wd.click(button)
        reason = wait_for("[data-testid=pause-reason]", lambda: self.wd.find('[data-testid="pause-reason"]'), 15)
        self.wd.type_text(reason, "desktop smoke test")
        confirm = wait_for("[data-testid=pause-confirm]", lambda: self.wd.find('[data-testid="pause-confirm"]'), 15)
        self.wd.click(confirm)
        wait_for("[data-testid=pause-banner]", lambda: self.wd.find('[data-testid="pause-banner"]'), 15)
        return "pause-global -> reason -> confirm; banner shown"

    def title_paused(self):
        native = wait_for(
            "PAUSED in the native window title",
            lambda: [t for t in native_titles(self.args.display) if "PAUSED" in t],
            15,
        )
        page = wait_for("PAUSED in document.title", lambda: "PAUSED" in (t := self.wd.title()) and t, 15)
        return f"title bar {native[0]!r}, WebDriver title {page!r}"

    def run(self):
        t0 = time.monotonic()
        try:
            if self.check("open a session on the app", self.open_session):
                if self.check("overview shows live numbers", self.live_numbers):
                    self.check("screenshot", self.screenshot)
                self.check("every screen opens and loads", self.every_screen)
                self.check("title is driftless", self.title_running)
                self.check("capability and CSP locked down", self.locked_down)
                if self.check("pause outbound writes from the window", self.pause_through_ui):
                    self.check("title says PAUSED", self.title_paused)
        finally:
            if self.wd.session:
                self.check("close the session", lambda: self.wd.delete_session())
            self.wd.close_connection()
        summary = f"{self.passed} passed, {self.failed} failed"
        print(f"desktop smoke: {time.monotonic() - t0:.1f}s", flush=True)
        if self.args.summary:
            # The caller prints it as its own last line, after stopping its processes.
            with open(self.args.summary, "w") as f:
                f.write(summary + "\n")
        else:
            print(summary, flush=True)
        return 0 if self.failed == 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--app", required=True, help="absolute path of the driftless-desktop binary")
    p.add_argument("--driver-port", type=int, required=True, help="tauri-driver's port")
    p.add_argument("--display", required=True, help="the X display the app runs on, e.g. :99")
    p.add_argument("--screenshot", required=True, help="where to write the PNG")
    p.add_argument("--timeout", type=float, default=60, help="bound for each wait, in seconds")
    p.add_argument("--summary", help="write the `N passed, M failed` line here instead of printing it")
    args = p.parse_args()
    if not os.path.isabs(args.app):
        p.error("--app must be an absolute path")
    sys.exit(Smoke(args).run())


if __name__ == "__main__":
    main()
