#!/usr/bin/env python3
"""A stand-in for the master's HTTP endpoint (docs/HTTP.md), for developing and testing the
dashboard without a master: the same paths, JSON shapes, token, cookies, CSRF check and errors,
over generated data that moves (running jobs progress, throughput changes, heartbeats age).

  python3 tests/browser/mock_api.py --port 8080 --workers 1000 --jobs 10000 --token 0123...

Prints the login URL (or the dashboard's URL without --token) as its first line of stdout, once it
listens. Without --token everything is public, as with `master --http-public` (POSTs included:
there is no token to check them against). Standard library only.
"""

import argparse
import http.cookies
import http.server
import json
import math
import os
import random
import secrets
import sys
import time
import urllib.parse

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "master", "dashboard", "index.html")

LOGGED_OUT = b"""<!doctype html><meta charset="utf-8"><title>taskmaster: log in</title>
<p>Not logged in. Open the login link the master printed when it started, or run
<code>taskmaster dashboard</code> to print it.</p>
"""

# What the master sends with the page: nothing but itself, inline script and style, same-origin fetch.
CSP = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"

# With --harness, /_harness frames the page and clicks through it as a user would (confirm()
# answered yes), writing what it saw into #harness: pagers, Cancel, Retry, a click on a job.
HARNESS = br"""<!doctype html><meta charset="utf-8"><title>dashboard harness</title>
<pre id="harness">starting</pre><iframe id="f" src="/" style="width:1400px;height:900px"></iframe>
<script>
var f = document.getElementById("f"), out = document.getElementById("harness"), log = [];
function say(s) { log.push(s); out.textContent = log.join("\n"); }
function until(cond, what, next) {
  var t0 = Date.now();
  (function again() {
    var ok = false;
    try { ok = cond(); } catch (e) {}
    if (ok) return next();
    if (Date.now() - t0 > 10000) return say("FAIL: timed out waiting for " + what);
    setTimeout(again, 100);
  })();
}
f.onload = function () {
  var w = f.contentWindow, d = f.contentDocument;
  w.confirm = function (q) { say("confirm: " + q); return true; };
  function t(id) { return d.getElementById(id).textContent; }
  function click(sel) { d.querySelector(sel).click(); }
  var cancelled, retried;
  var steps = [
    [function () {}, function () { return t("jobs-range").indexOf("1\u201320 of") === 0; }, "the first page of jobs"],
    [function () { click("#jobs-next"); }, function () { return t("jobs-range").indexOf("21\u201340 of") === 0; }, "older jobs"],
    [function () { click("#jobs-newest"); }, function () { return t("jobs-range").indexOf("1\u201320 of") === 0; }, "the newest jobs again"],
    [function () { click("#workers-next"); }, function () { return t("workers-range").indexOf("51\u2013100 of") === 0; }, "the second page of workers"],
    [function () { click("#workers-prev"); }, function () { return t("workers-range").indexOf("1\u201350 of") === 0; }, "the first page of workers"],
    [function () { cancelled = d.querySelector("#jobs button[data-action=cancel]").closest("tr").getAttribute("data-job"); click("#jobs tr[data-job='" + cancelled + "'] button[data-action=cancel]"); }, function () { return /cancel job \d+: \{"job":\d+,"cancelled":\d+\}/.test(t("action-msg")); }, "cancel's answer"],
    // The cancelled job has cancelled tasks but no dead one: it offers no Retry (only a failed job does).
    [function () {}, function () { return d.querySelector("#jobs tr[data-job='" + cancelled + "']") && !d.querySelector("#jobs tr[data-job='" + cancelled + "'] button[data-action=retry]"); }, "no Retry for a cancelled job"],
    [function () { retried = d.querySelector("#jobs .pill.failed").closest("tr").getAttribute("data-job"); click("#jobs tr[data-job='" + retried + "'] button[data-action=retry]"); }, function () { return /retry job \d+: \{"job":\d+,"retry_job":\d+,"tasks":\d+\}/.test(t("action-msg")); }, "retry's answer"],
    [function () { click("#jobs tbody tr:nth-child(3)"); }, function () { return !d.getElementById("job-panel").hidden && /^Job \d+/.test(t("job-panel")) && /[?]job=\d+$/.test(w.location.search); }, "the job panel of a clicked job"]
  ];
  (function step(i) {
    if (i === steps.length) return say("DONE");
    steps[i][0]();
    until(steps[i][1], steps[i][2], function () { say("ok: " + steps[i][2] + " | " + t("action-msg")); step(i + 1); });
  })(0);
};
</script>
"""

FUNCTIONS = ["exec", "sleep", "square", "echo", "resize", "transcode"]
QUEUES = ["default", "dashq", "gpu", "batch", "emails"]
# Errors with markup in them: the page must show them as text.
ERRORS = [
    "exit status 1: <img src=x onerror=alert(1)> not found",
    "sleep: interrupted at the task's timeout",
    "<b>boom</b> & <script>alert('x')</script>",
    "ValueError: invalid literal for int() with base 10: 'abc'" + " (and more)" * 20,
    "exit status 137: killed",
]


class Fixture:
    def __init__(self, n_workers, n_jobs, seed, journal_writable):
        rnd = random.Random(seed)
        self.started = time.time()
        self.master = "%016x" % rnd.getrandbits(64)
        self.journal_writable = journal_writable
        self.workers = []
        for i in range(n_workers):
            host = "node-%03d" % (i // 4)
            pid = 1000 + rnd.randrange(60000)
            threads = rnd.choice([2, 4, 8, 16])
            self.workers.append({
                "id": "%s-%d" % (host, pid), "host": host, "pid": pid,
                "threads": None if i % 97 == 5 else threads, "slots": threads * 2,
                "queues": ["dashq"] if i % 3 == 0 else ["default", "batch"],
                "functions": ["exec", "sleep", "square", "echo", "fail"],
                "done": rnd.randrange(20000),
                "failed": rnd.randrange(40) if i % 23 == 1 else 0,
                "late": 3.5 + rnd.random() * 20 if i % 41 == 7 else 0.0,
                "seed": rnd.random(),
            })
        self.workers.sort(key=lambda w: w["id"])
        self.jobs = {}
        now = time.time()
        for j in range(1, n_jobs + 1):
            newest = n_jobs - j  # 0 for the newest job
            total = rnd.choice([1, 10, 200, 1000, 5000, 50000])
            job = {
                "id": j, "total": total, "function": rnd.choice(FUNCTIONS), "queue": rnd.choice(QUEUES),
                "created": now - (newest * 37.0 + rnd.random() * 30), "cancelled": False, "after": [],
                "rate": total / (60 + rnd.random() * 600), "dead": 0, "cancelled_n": 0, "done0": 0,
            }
            if newest < 6:  # the newest ones still run
                job["done0"] = int(total * rnd.random() * 0.5)
                job["dead"] = rnd.choice([0, 0, 2])
            elif newest == 6:
                job["state"] = "waiting"
                job["after"] = [j - 1]
            else:
                job["dead"] = rnd.choice([0] * 8 + [1, 3])
                job["ended"] = job["created"] + total / job["rate"]
            if newest < 2:
                job["queue"] = "dashq"
                job["function"] = "sleep"
            job["dead"] = min(job["dead"], total)
            self.jobs[j] = job
        self.next_job = n_jobs + 1

    # The state of a job now: running ones progress at their rate.
    def job_view(self, job):
        now = time.time()
        total = job["total"]
        if job.get("state") == "waiting":
            done, running = 0, 0
        elif "ended" in job:
            done, running = total - job["dead"] - job["cancelled_n"], 0
        else:
            done = min(total - job["dead"], job["done0"] + int((now - job["created"]) * job["rate"]))
            running = min(total - done - job["dead"], 8)
            if done + job["dead"] >= total:
                job["ended"] = now
        unfinished = total - done - job["dead"] - job["cancelled_n"]
        if job["cancelled"]:
            state = "cancelled"
        elif job.get("state") == "waiting":
            state = "waiting"
        elif unfinished > 0:
            state = "running"
        elif job["dead"] or job["cancelled_n"]:
            state = "failed"
        else:
            state = "done"
        return {
            "id": job["id"], "state": state, "total": total, "done": done, "failed": job["dead"] + job["cancelled_n"],
            "unfinished": unfinished, "function": job["function"], "queue": job["queue"],
            "age_s": round(now - job["created"], 1),
            "ended_s": round(now - job["ended"], 1) if "ended" in job else None,
            "cancelled": job["cancelled"], "after": job["after"],
        }, running

    def worker_view(self, w):
        now = time.time()
        threads = w["threads"] or 4
        phase = (now / 7 + w["seed"] * 10) % 1
        running = 0 if w["late"] else int(round(threads * (0.5 + 0.5 * math.sin(phase * 2 * math.pi))))
        reserved = 0 if w["late"] else min(w["slots"] - running, int(w["seed"] * w["slots"]))
        done = w["done"] + int((now - self.started) * (1 + w["seed"] * 3))
        tasks = []
        for k in range(min(20, running + reserved)):
            tasks.append({"task": 100000 + int(w["seed"] * 1e6) + k, "job": len(self.jobs) - (k % 3),
                          "function": "sleep" if w["queues"] == ["dashq"] else FUNCTIONS[k % len(FUNCTIONS)],
                          "queue": w["queues"][0], "state": "running" if k < running else "reserved",
                          "attempt": 1 + (k % 5 == 4), "for_s": round((phase * 9 + k) % 12, 1) if k < running else 0.0})
        return {
            "id": w["id"], "host": w["host"], "pid": w["pid"], "threads": w["threads"], "slots": w["slots"],
            "running": running, "reserved": reserved, "done": done, "failed": w["failed"],
            "last_heartbeat_s": round(w["late"] + now - self.started if w["late"] else (now * 3 + w["seed"] * 5) % 1, 1),
            "queues": w["queues"], "functions": w["functions"], "tasks": tasks,
        }

    def status(self):
        now = time.time()
        newest = sorted(self.jobs)[-8:]
        per_queue = {q: {"name": q, "queued": 0, "running": 0, "reserved": 0, "delayed": 0, "waiting": 0,
                         "done": 0, "dead": 0, "cancelled": 0, "oldest_queued_s": None, "served_by": 0} for q in QUEUES}
        for j in newest:
            v, running = self.job_view(self.jobs[j])
            q = per_queue[v["queue"]]
            if v["state"] == "waiting":
                q["waiting"] += v["total"]
            else:
                q["queued"] += max(0, v["unfinished"] - running)
                q["running"] += running
            q["done"] += v["done"]
            q["dead"] += self.jobs[j]["dead"]
            q["cancelled"] += self.jobs[j]["cancelled_n"]
        for name, q in per_queue.items():
            q["served_by"] = sum(1 for w in self.workers if name in w["queues"])
            if q["queued"]:
                q["oldest_queued_s"] = round(3 + (now % 60), 1)
            if name == "gpu" and q["queued"] == 0:  # always some tasks that no worker serves
                q["queued"], q["oldest_queued_s"] = 42, round(now - self.started + 600, 1)
        queues = sorted(per_queue.values(), key=lambda q: q["name"])
        threads = sum(w["threads"] or 0 for w in self.workers)
        totals = {k: sum(q[k] for q in queues) for k in ("queued", "running", "reserved", "delayed", "waiting")}
        totals.update(workers=len(self.workers), threads=threads, jobs=len(self.jobs))
        totals["unfinished"] = totals["queued"] + totals["running"] + totals["reserved"] + totals["delayed"] + totals["waiting"]
        end = int(now)
        finished, failed, submitted = [], [], []
        for i in range(300):
            t = end - 299 + i
            base = 300 + 150 * math.sin(t / 40.0) + 60 * math.sin(t / 7.0)
            if 200 <= (t % 400) < 230:
                base = 0  # a gap: nothing ran
            finished.append(max(0, int(base)))
            failed.append(int(20 + 15 * math.sin(t / 11.0)) if t % 90 < 10 else (1 if t % 13 == 0 else 0))
            submitted.append(5000 if t % 120 == 0 else 0)
        finished[-1] //= 3  # the last interval is still filling
        failures = []
        rnd = random.Random(int(now) // 10)
        for k in range(50):
            w = self.workers[rnd.randrange(len(self.workers))] if self.workers else {"id": "none"}
            failures.append({
                "at": round(now - k * 7.3 - rnd.random(), 1), "task": 40961 + rnd.randrange(100000),
                "job": rnd.randrange(1, max(2, len(self.jobs) + 1)), "function": rnd.choice(FUNCTIONS),
                "queue": rnd.choice(QUEUES), "worker": w["id"], "attempt": 1 + rnd.randrange(3),
                "dead": rnd.random() < 0.4, "error": ERRORS[k % len(ERRORS)][:500],
            })
        return {
            "master": self.master, "uptime_s": round(now - self.started + 812.4, 1),
            "journal": {"path": "/var/lib/taskmaster/journal.db", "bytes": 1048576 + int(now - self.started) * 4096,
                        "writable": self.journal_writable},
            "totals": totals,
            "rates": {"submitted_per_s": 0.0, "finished_per_s": float(finished[-2])},
            "queues": queues,
            "throughput": {"interval_s": 1, "end": end, "finished": finished, "failed": failed, "submitted": submitted},
            "failures": failures,
        }

    def job_detail(self, job):
        v, running = self.job_view(job)
        queued = max(0, v["unfinished"] - running) if v["state"] != "waiting" else 0
        v["counts"] = {"waiting": v["total"] if v["state"] == "waiting" else 0, "delayed": 0, "queued": queued,
                       "running": running, "done": v["done"], "dead": job["dead"], "cancelled": job["cancelled_n"]}
        live = v["state"] == "running"
        v["finished_per_s"] = round(job["rate"], 1) if live else 0.0
        v["eta_s"] = round(v["unfinished"] / job["rate"], 1) if live and job["rate"] > 0 else None
        v["failures"] = [{"task": 40961 + k, "attempt": 3, "worker": self.workers[k % len(self.workers)]["id"] if self.workers else "w",
                          "error": ERRORS[k % len(ERRORS)]} for k in range(min(20, job["dead"]))]
        return v


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "taskmaster-mock"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("mock_api: %s\n" % (fmt % args))

    def send(self, code, body, ctype="application/json", headers=()):
        data = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if not self.server.harness:
            self.send_header("X-Frame-Options", "DENY")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def error(self, code, message):
        self.send(code, {"error": message})

    def cookies(self):
        c = http.cookies.SimpleCookie()
        try:
            c.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return {}
        return {k: m.value for k, m in c.items()}

    # How the request is authenticated: "bearer", "cookie", "public" or None.
    def auth(self):
        token = self.server.token
        if token is None:
            return "public"
        if self.headers.get("Authorization", "") == "Bearer " + token:
            return "bearer"
        if secrets.compare_digest(self.cookies().get("tm_token", ""), token):
            return "cookie"
        return None

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        path = url.path
        fx = self.server.fixture
        if self.server.delay:
            time.sleep(self.server.delay)
        if path == "/login":
            if self.server.token is None or q.get("token", [""])[0] != self.server.token:
                return self.error(401, "wrong or missing token")
            csrf = secrets.token_hex(16)
            loc = "/_harness" if self.server.harness and "harness" in q else "/"
            if "job" in q and q["job"][0].isdigit():
                loc = "/?job=" + q["job"][0]
            return self.send(303, b"", "text/plain", [
                ("Location", loc),
                ("Set-Cookie", "tm_token=%s; HttpOnly; SameSite=Strict; Path=/" % self.server.token),
                ("Set-Cookie", "tm_csrf=%s; SameSite=Strict; Path=/" % csrf)])
        authed = self.auth()
        if path == "/_harness" and self.server.harness:
            return self.send(200, HARNESS, "text/html; charset=utf-8")
        if path == "/":
            if not authed:
                return self.send(401, LOGGED_OUT, "text/html; charset=utf-8")
            with open(PAGE, "rb") as f:
                csp = CSP.replace("'none'", "'self'") if self.server.harness else CSP
                return self.send(200, f.read(), "text/html; charset=utf-8", [("Content-Security-Policy", csp)])
        if path.startswith("/api/") and self.server.break_after is not None:
            self.server.api_gets += 1
            if self.server.api_gets > self.server.break_after:
                if self.server.break_with == "close":  # as if the master were gone: no answer at all
                    self.close_connection = True
                    return
                authed = None  # as if the master had been restarted with another key
        if path == "/metrics" or path.startswith("/api/"):
            if not authed:
                return self.error(401, "no or wrong token: log in with the URL the master printed, or send Authorization: Bearer TOKEN")
        if path == "/metrics":
            s = fx.status()
            return self.send(200, ("taskmaster_tasks_queued %d\n" % s["totals"]["queued"]).encode(), "text/plain; version=0.0.4")
        if path == "/api/status":
            return self.send(200, fx.status())
        if path == "/api/workers":
            offset = self.int_param(q, "offset", 0, 0, 1 << 40)
            limit = self.int_param(q, "limit", 50, 1, 500)
            if offset is None or limit is None:
                return
            page = [fx.worker_view(w) for w in fx.workers[offset:offset + limit]]
            return self.send(200, {"total": len(fx.workers), "offset": offset, "workers": page})
        if path == "/api/jobs":
            limit = self.int_param(q, "limit", 20, 1, 200)
            before = self.int_param(q, "before", None, 1, 1 << 62)
            if limit is None or (before is None and "before" in q):
                return
            ids = sorted(fx.jobs, reverse=True)
            if before is not None:
                ids = [j for j in ids if j < before]  # a test fixture: fine to scan
            page = ids[:limit]
            next_before = page[-1] if len(ids) > limit else None
            return self.send(200, {"total": len(fx.jobs), "jobs": [fx.job_view(fx.jobs[j])[0] for j in page],
                                   "next_before": next_before})
        if path.startswith("/api/jobs/"):
            rest = path[len("/api/jobs/"):]
            if "/" in rest:
                return self.error(405, "use POST for " + path)
            job = self.job(rest)
            if job:
                return self.send(200, fx.job_detail(job))
            return
        return self.error(404, "no such path: " + path)

    do_HEAD = do_GET

    def int_param(self, q, name, default, lo, hi):
        if name not in q:
            return default
        v = q[name][0]
        if not v.isdigit() or not lo <= int(v) <= hi:
            self.error(400, "%s must be an integer from %d to %d, not '%s'" % (name, lo, hi, v[:40]))
            return None
        return int(v)

    def job(self, text):
        if not text.isdigit():
            self.error(400, "not a job id: '%s'" % text[:40])
            return None
        job = self.server.fixture.jobs.get(int(text))
        if not job:
            self.error(404, "no job %s" % text)
        return job

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if not (len(parts) == 4 and parts[:2] == ["api", "jobs"] and parts[3] in ("cancel", "retry")):
            if url.path in ("/", "/login", "/metrics", "/api/status", "/api/workers", "/api/jobs") or \
                    (len(parts) == 3 and parts[:2] == ["api", "jobs"]):
                return self.error(405, "use GET for " + url.path)
            return self.error(404, "no such path: " + url.path)
        how = self.auth()
        if how is None:
            return self.error(401, "no or wrong token")
        if how == "cookie":
            csrf = self.cookies().get("tm_csrf", "")
            if not csrf or not secrets.compare_digest(self.headers.get("X-CSRF-Token", ""), csrf):
                return self.error(403, "the X-CSRF-Token header does not match the tm_csrf cookie")
            origin = self.headers.get("Origin")
            if origin is not None and urllib.parse.urlsplit(origin).netloc != self.headers.get("Host", ""):
                return self.error(403, "Origin %s is not this host" % origin[:100])
        job = self.job(parts[2])
        if not job:
            return
        fx = self.server.fixture
        view, _ = fx.job_view(job)
        if parts[3] == "cancel":
            n = view["unfinished"]
            if n and view["state"] != "cancelled":
                job["cancelled"] = True
                job["cancelled_n"] += n
                job["total"] = view["done"] + job["dead"] + job["cancelled_n"]
                job["ended"] = time.time()
                job.pop("state", None)
            return self.send(200, {"job": job["id"], "cancelled": n})
        if job["dead"] == 0:
            return self.error(409, "job %d has no dead task to retry" % job["id"])
        new = fx.next_job
        fx.next_job += 1
        fx.jobs[new] = {"id": new, "total": job["dead"], "function": job["function"], "queue": job["queue"],
                        "created": time.time(), "cancelled": False, "after": [], "rate": 0.5, "dead": 0,
                        "cancelled_n": 0, "done0": 0}
        return self.send(200, {"job": job["id"], "retry_job": new, "tasks": job["dead"]})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    ap.add_argument("--workers", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--token", help="require this token (as the master does with a key); without it, all is public")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--journal-read-only", action="store_true", help="report the journal as not writable")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering each GET")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    ap.add_argument("--harness", action="store_true",
                    help="serve /_harness (/login?token=T&harness=1 leads there), which clicks through the page in a frame")
    ap.add_argument("--break-after", type=int, metavar="N", help="after N GETs of /api/..., answer every other one as --break-with says")
    ap.add_argument("--break-with", choices=["close", "401"], default="close",
                    help="close: close the connection without an answer (a network error); 401: refuse the token")
    a = ap.parse_args()
    srv = http.server.ThreadingHTTPServer((a.host, a.port), Handler)
    srv.daemon_threads = True
    srv.fixture = Fixture(a.workers, a.jobs, a.seed, not a.journal_read_only)
    srv.token, srv.verbose, srv.delay = a.token, a.verbose, a.delay
    srv.break_after, srv.break_with, srv.api_gets = a.break_after, a.break_with, 0
    srv.harness = a.harness
    host, port = srv.server_address[:2]
    base = "http://%s:%d" % (host, port)
    print(base + ("/login?token=" + a.token if a.token else "/"), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
