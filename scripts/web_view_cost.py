#!/usr/bin/env python3
"""What the live web view costs the daemon, and whether a browser keeps up (docs/web-view.md).

Usage: python3 scripts/web_view_cost.py [--inflor PATH] [--streams N] [--seconds S]
                                        [--no-web] [--browser]

Runs `inflor run` on N streams (the bundled recordings in assets/, looped at real time) with
window = "duration:1000": T = 10 bins of 1 ms, so 100 windows/s per stream. It reads /streams
every 0.5 s for S seconds, then stops the daemon with SIGINT. With --browser, it first opens
headless Chromium through chromedriver (both on the PATH) and loads the page. It then also
reads each card's window number from the page, to see how far the page is behind the
pipeline. It prints the windows classified and dropped, the CPU seconds inflor (and Chromium)
used, and the page's lag in windows. It uses only the standard library and is never part of CI.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = ["0", "3", "7", "9"]


def cpu_seconds(pids):
    """User + system CPU seconds of the processes `pids` (those gone count 0)."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tck
        except OSError:
            pass
    return total


def pids_with(text):
    """The processes whose command line contains `text`."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid) as f:
                    if text in f.read():
                        out.append(int(pid))
            except OSError:
                pass
    return out


class Browser:
    """Headless Chromium driven by chromedriver (W3C WebDriver over loopback)."""

    def __init__(self):
        self.driver = subprocess.Popen(
            ["chromedriver", "--port=0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for line in self.driver.stdout:
            m = re.search(r"started successfully on port (\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        self.profile = tempfile.mkdtemp()
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--user-data-dir=" + self.profile]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"args": args}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        req = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.port, path),
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def on_session(self, method, what, body=None):
        return self.call(method, "/session/%s/%s" % (self.session, what), body)

    def cpu(self):
        return cpu_seconds(pids_with(self.profile))

    def close(self):
        self.call("DELETE", "/session/" + self.session)
        self.driver.kill()
        self.driver.wait()


def config(streams, web, out):
    text = 'workers = %d\n[admin]\nlisten = "127.0.0.1:0"\nweb = %s\n' % (
        1 if streams == 1 else 2, "true" if web else "false")
    for i in range(streams):
        d = DIGITS[i % len(DIGITS)]
        text += (
            '[[streams]]\nid = "fast-%d"\nsource = { kind = "file", path = %s, speed = 1.0, '
            'loop = true }\nwindow = "duration:1000"\nbackpressure = "drop_oldest"\nlabel = "%s"\n'
            % (i, json.dumps(os.path.join(ROOT, "assets", "dvs-digits-%s.aedat" % d)), d))
    text += '[[sinks]]\nkind = "file"\npath = %s\n' % json.dumps(out)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inflor", default=os.path.join(ROOT, "target", "debug", "inflor"))
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--no-web", action="store_true")
    ap.add_argument("--browser", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    path = os.path.join(work, "fast.toml")
    with open(path, "w") as f:
        f.write(config(a.streams, not a.no_web, os.path.join(work, "outputs.jsonl")))
    browser = Browser() if a.browser else None
    daemon = subprocess.Popen([a.inflor, "run", path], stderr=subprocess.PIPE, text=True)
    for line in daemon.stderr:
        m = re.search(r"admin on http://(\S+)", line)
        if m:
            admin = m.group(1)
            break
    if browser:
        browser.on_session("POST", "url", {"url": "http://%s/" % admin})
        chromium_before = browser.cpu()
    page_js = ("return Array.from(document.querySelectorAll('section.stream'))"
               ".map(s => [s.dataset.stream, Number(s.dataset.window)])")
    start = time.time()
    lags = []
    while time.time() - start < a.seconds:
        with urllib.request.urlopen("http://%s/streams" % admin, timeout=30) as r:
            rows = json.loads(r.read())
        last = {s["id"]: (s["last"] or {}).get("window", -1) for s in rows}
        if browser:
            shown = browser.on_session("POST", "execute/sync", {"script": page_js, "args": []})
            lags += [last[i] - w for i, w in shown if i in last]
        time.sleep(0.5)
    inflor_cpu = cpu_seconds([daemon.pid])
    chromium_cpu = browser.cpu() - chromium_before if browser else None
    daemon.send_signal(signal.SIGINT)
    err = daemon.stderr.read()
    daemon.wait()
    summary = next(l for l in err.splitlines() if "stopped:" in l)
    counts = dict(kv.split("=") for kv in summary.split() if "=" in kv)
    line = "%d stream(s), web %s, %s: %.1f s, windows %s, dropped %s, inflor CPU %.1f s" % (
        a.streams, "off" if a.no_web else "on", "Chromium open" if browser else "no browser",
        time.time() - start, counts["inferences"], counts["windows_dropped"], inflor_cpu)
    if browser:
        browser.close()
        lags.sort()
        if lags:
            line += ", Chromium CPU %.1f s, page behind by median %d, max %d windows (%d samples)" % (
                chromium_cpu, lags[len(lags) // 2], lags[-1], len(lags))
    print(line)


if __name__ == "__main__":
    main()
