#!/usr/bin/env python3
"""Jepsen-style test: a steady submitting load against a master and three workers on network
namespace hosts, while a nemesis injects faults; then everything heals and every acknowledged task
must have exactly one outcome. Run by jepsen.sh, which makes the hosts and removes them.

Load: several submitters in a loop, each submission a small job of `sleep` tasks whose args are
unique (sleep returns its args, so every result names its task) with its own --idempotency-key; a
submission is acknowledged when `taskmaster submit` prints the job id. A failed submission is tried
again with the same key. Waiters follow every acknowledged job with `taskmaster wait JOB --json`.

Nemesis, one fault at a time: kill -9 of the master and a restart (same --data-dir), SIGSTOP/SIGCONT
of the master and of a worker, kill -9 of a worker and a new one on its host, a partition of one
host from the master (nft drops on both sides, links stay up), the master's link down, and a full
disk (the master's data dir is a small tmpfs, filled by a big file that is then removed; a 2 MB
submission is made meanwhile, so that a commit needs pages the disk does not have).

Checker (tests/netns/check_outcomes.py): lost (an acknowledged task with no outcome), duplicated (a
task with two outcome lines, by task id or by args), unexpected (an outcome of a task never
submitted) must all be 0; so must wrong results, self-exits of master or workers, and jobs that one
idempotency key gave twice.
"""
import argparse
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_outcomes  # noqa: E402

WORKERS = ("w1", "w2", "w3")


class Stop(Exception):
    pass


class Cluster:
    """The processes of the test, started in namespaces, always stopped by their own PID."""

    def __init__(self, a):
        self.a = a
        self.endpoint = f"tcp://{a.master_ip}:5555"
        self.procs = []  # every Popen ever started, to stop at the end
        self.lock = threading.Lock()
        self.master = None
        self.master_gen = 0
        self.workers = {}  # host -> Popen
        self.worker_gen = Counter()
        self.meant_to_die = set()  # PIDs the nemesis killed
        self.self_exits = []

    def ns(self, host):
        return self.a.id + host

    def popen(self, host, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(host)] + argv, **kw)
        with self.lock:
            self.procs.append(p)
        return p

    def log(self, name):
        return open(os.path.join(self.a.work, name + ".log"), "ab")

    def start_master(self):
        self.master_gen += 1
        out = os.path.join(self.a.work, "master.out")
        with open(out, "wb") as o, self.log("master") as e:
            self.master = self.popen("m", [self.a.tm, "master", "--bind", self.endpoint, "--data-dir", self.a.data_dir,
                                           "--heartbeat-interval", "0.5", "--worker-timeout", "2"],
                                     stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open(out) as f:
                line = f.readline()
            if line.endswith("\n"):
                if line.strip() != self.endpoint:
                    raise RuntimeError(f"master bound {line.strip()}")
                return
            if self.master.poll() is not None:
                raise RuntimeError(f"the master exited {self.master.returncode} at start")
            time.sleep(0.05)  # polling for the endpoint line
        raise RuntimeError("no endpoint line from the master in 20 s")

    def start_worker(self, host):
        self.worker_gen[host] += 1
        name = f"{host}.{self.worker_gen[host]}"  # every worker process its own name
        with self.log(host) as e:
            self.workers[host] = self.popen(host, [self.a.tm, "worker", "--connect", self.endpoint, "-j", "2",
                                                   "--name", name], stdout=subprocess.DEVNULL, stderr=e,
                                            stdin=subprocess.DEVNULL)

    def signal(self, p, sig):
        if p.poll() is None:
            if sig == signal.SIGKILL:
                self.meant_to_die.add(p.pid)
            os.kill(p.pid, sig)

    def kill_master(self):
        self.signal(self.master, signal.SIGKILL)
        self.master.wait()

    def check_alive(self):
        """Master or workers that exited without being killed are counted, and started again."""
        for host, p in list(self.workers.items()):
            if p.poll() is not None and p.pid not in self.meant_to_die:
                self.self_exits.append(f"worker {host} exited {p.returncode}")
                self.start_worker(host)
        if self.master.poll() is not None and self.master.pid not in self.meant_to_die:
            self.self_exits.append(f"master exited {self.master.returncode}")
            self.start_master()

    def run(self, host, argv, stdin=None, timeout=60):
        """Runs a client command on a host; (exit code, stdout). A command over its time is killed."""
        p = self.popen(host, [self.a.tm] + argv + ["--connect", self.endpoint], stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(stdin.encode() if stdin else None, timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            return -1, out.decode(), "over its time: " + err.decode()
        return p.returncode, out.decode(), err.decode()

    def stop_all(self):
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Nemesis:
    def __init__(self, cluster, a, rng, load):
        self.c = cluster
        self.load = load
        self.extra = []  # threads of big submissions
        self.a = a
        self.rng = rng
        self.faults = Counter()
        self.stopped = set()  # Popen objects under SIGSTOP
        self.nft = []  # (host, table)
        self.links_down = []
        self.fill = os.path.join(a.disk, "fill") if a.disk else None
        self.kinds = ["master-kill", "master-stop", "worker-stop", "worker-kill", "partition-worker",
                      "partition-client", "master-link-down"]
        if a.disk:
            self.kinds.append("disk-full")

    def sh(self, argv):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)

    def nft_drop(self, host, table, saddr):
        ns = ["ip", "netns", "exec", self.c.ns(host), "nft"]
        self.sh(ns + ["add", "table", "inet", table])
        self.sh(ns + ["add", "chain", "inet", table, "input", "{ type filter hook input priority 0; policy accept; }"])
        self.sh(ns + ["add", "rule", "inet", table, "input", "ip", "saddr", saddr, "drop"])
        self.nft.append((host, table))

    def partition(self, host):
        """host and the master drop each other's packets; their links stay up."""
        self.nft_drop(host, "jepsen", self.a.master_ip)
        self.nft_drop("m", "jepsen", self.a.host_ip[host])

    def heal(self):
        for p in list(self.stopped):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
        self.stopped.clear()
        for host, table in self.nft:
            subprocess.run(["ip", "netns", "exec", self.c.ns(host), "nft", "delete", "table", "inet", table],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.nft.clear()
        for host in self.links_down:
            self.sh(["ip", "-n", self.c.ns(host), "link", "set", f"v{self.a.id}{host}", "up"])
        self.links_down.clear()
        if self.fill and os.path.exists(self.fill):
            os.remove(self.fill)

    def fill_disk(self):
        free = shutil.disk_usage(self.a.disk).free
        with open(self.fill, "wb") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, free)
            except OSError:
                pass  # as much as fits
        # Whatever is left (tmpfs rounding) goes too.
        with open(self.fill, "ab") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass

    def inject(self, kind, hold):
        c = self.c
        if kind == "master-kill":
            c.kill_master()
            time.sleep(self.rng.uniform(0, 2))  # the master stays down this long
            c.start_master()
            return
        if kind == "worker-kill":
            host = self.rng.choice(WORKERS)
            c.signal(c.workers[host], signal.SIGKILL)
            c.workers[host].wait()
            time.sleep(self.rng.uniform(0, 1))
            c.start_worker(host)
            return
        if kind == "master-stop":
            target = c.master
        elif kind == "worker-stop":
            target = c.workers[self.rng.choice(WORKERS)]
        if kind in ("master-stop", "worker-stop"):
            os.kill(target.pid, signal.SIGSTOP)
            self.stopped.add(target)
        elif kind == "partition-worker":
            self.partition(self.rng.choice(WORKERS))
        elif kind == "partition-client":
            self.partition("c")
        elif kind == "master-link-down":
            self.sh(["ip", "-n", c.ns("m"), "link", "set", f"v{self.a.id}m", "down"])
            self.links_down.append("m")
        elif kind == "disk-full":
            self.fill_disk()
            # A big submission while the disk is full: refused, and acknowledged only once it fits.
            big = threading.Thread(target=self.load.big_submission, args=(self.faults[kind], self.until), daemon=True)
            big.start()
            self.extra.append(big)
        time.sleep(hold)  # the fault's duration
        if kind == "disk-full":
            code, out, _ = c.run("c", ["status", "--json"], timeout=20)
            counters = json.loads(out)["counters"] if code == 0 else {}
            print(f"           {os.path.getsize(self.fill) >> 20} MiB filled, {shutil.disk_usage(self.a.disk).free} bytes "
                  f"free; the master's journal_failures {counters.get('journal_failures')}, "
                  f"refused_full {counters.get('refused_full')}", flush=True)
        self.heal()

    def run(self, until):
        self.until = until
        order = []
        while time.monotonic() < until:
            time.sleep(self.rng.uniform(1, 3))  # calm between faults
            if time.monotonic() >= until:
                break
            if not order:  # every kind once in each round, in a random order
                order = self.rng.sample(self.kinds, len(self.kinds))
            kind = order.pop()
            hold = self.rng.uniform(1, 5)
            self.faults[kind] += 1
            print(f"  {time.monotonic() - T0:6.1f} s  nemesis: {kind} ({hold:.1f} s)", flush=True)
            self.inject(kind, hold)
            self.c.check_alive()


class Load:
    """Submitters and waiters; the history of every submission."""

    def __init__(self, cluster, a):
        self.c = cluster
        self.a = a
        self.lock = threading.Lock()
        self.submitted = {}  # key -> list of args
        self.acked = {}  # key -> job id
        self.double_jobs = []  # keys that gave two different job ids
        self.failed_tries = Counter()  # exit code -> submit attempts that failed
        self.unacked = set()  # keys never acknowledged
        self.to_wait = queue.Queue()
        self.outcomes = {}  # job -> outcome objects of its successful wait
        self.wait_failures = Counter()
        self.history = open(os.path.join(a.work, "history.jsonl"), "w")

    def record(self, **event):
        with self.lock:
            event["t"] = round(time.monotonic() - T0, 3)
            self.history.write(json.dumps(event) + "\n")

    def submit(self, key, function, lines, until):
        """One submission (`lines` of args, as JSON text), tried again with the same key until it is
        acknowledged, for as long as the load runs and a little after (a submission never
        acknowledged may or may not exist: it is not followed)."""
        with self.lock:
            self.submitted[key] = [json.loads(x) for x in lines]
        self.unacked.add(key)
        attempt = 0
        while attempt == 0 or time.monotonic() < until + 20:
            attempt += 1
            self.record(op="invoke", key=key, attempt=attempt, tasks=len(lines))
            code, out, err = self.c.run("c", ["submit", function, "--each", "--idempotency-key", key,
                                              "--max-attempts", "20", "--backoff", "0.1", "--timeout", "30",
                                              "--retry-timeout", "10"], stdin="\n".join(lines) + "\n", timeout=40)
            if code == 0 and out.strip().isdigit():
                job = int(out.strip())
                self.record(op="ok", key=key, job=job)
                with self.lock:
                    if key in self.acked and self.acked[key] != job:
                        self.double_jobs.append(key)
                    if key not in self.acked:
                        self.acked[key] = job
                        self.to_wait.put((key, job))
                self.unacked.discard(key)
                return
            self.record(op="fail", key=key, code=code, err=err.strip()[-200:])
            with self.lock:
                self.failed_tries[code] += 1
            time.sleep(min(0.2 * attempt, 2))  # before trying the same key again

    def submitter(self, s, until):
        seq = 0
        rng = random.Random(self.a.seed * 100 + s)
        while time.monotonic() < until:
            seq += 1
            # 0.02 s sleeps, each value unique: 0.02 S SEQ(4) I(2).
            args = [f"0.02{s}{seq:04d}{i:02d}" for i in range(1, rng.randint(5, 40) + 1)]
            self.submit(f"jepsen-{self.a.seed}-{s}-{seq}", "sleep", args, until)
            time.sleep(rng.uniform(0.2, 1.0))  # between submissions

    def big_submission(self, n, until):
        """About 2 MB of echo tasks, each args unique: on a full disk its commit needs new pages."""
        args = [json.dumps(f"big-{self.a.seed}-{n}-{i}-" + "x" * 20000) for i in range(1, 101)]
        self.submit(f"jepsen-{self.a.seed}-big-{n}", "echo", args, until)

    def waiter(self, done):
        while True:
            try:
                key, job = self.to_wait.get(timeout=0.5)
            except queue.Empty:
                if done.is_set():
                    return
                continue
            while True:
                left = self.a.final_deadline - time.monotonic()
                code, out, err = self.c.run("c", ["wait", str(job), "--json", "--retry-timeout", "30"],
                                            timeout=max(5, min(90, left)))
                if code in (0, 1):
                    self.outcomes[job] = [json.loads(line) for line in out.splitlines() if line.strip()]
                    self.record(op="outcomes", key=key, job=job, n=len(self.outcomes[job]), code=code)
                    break
                self.wait_failures[code] += 1
                self.record(op="wait-fail", key=key, job=job, code=code, err=err.strip()[-200:])
                if time.monotonic() > self.a.final_deadline:
                    return
                time.sleep(0.5)  # before asking again


T0 = time.monotonic()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tm", required=True)
    p.add_argument("--id", required=True, help="the namespace prefix made by jepsen.sh")
    p.add_argument("--work", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--disk", help="the tmpfs holding --data-dir, for the full-disk fault")
    p.add_argument("--hosts", required=True, help="host=ip,... (m, w1, w2, w3, c)")
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--submitters", type=int, default=4)
    p.add_argument("--drain-seconds", type=float, default=90, help="after healing, for every acknowledged job to end")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    a = p.parse_args()
    a.host_ip = dict(kv.split("=") for kv in a.hosts.split(","))
    a.master_ip = a.host_ip["m"]
    rng = random.Random(a.seed)
    print(f"jepsen: seed {a.seed}, {a.seconds:.0f} s of load and faults, {a.submitters} submitters; "
          f"full disk {'on ' + a.disk if a.disk else 'skipped'}", flush=True)

    def on_term(*_):
        raise Stop()

    signal.signal(signal.SIGTERM, on_term)

    c = Cluster(a)
    load = Load(c, a)
    nemesis = Nemesis(c, a, rng, load)
    try:
        c.start_master()
        for w in WORKERS:
            c.start_worker(w)
        until = time.monotonic() + a.seconds
        # Load over and faults healed (the last fault may outlast the load by its hold), every
        # acknowledged job must have ended by then.
        a.final_deadline = until + 10 + a.drain_seconds
        submitters = [threading.Thread(target=load.submitter, args=(s, until), daemon=True)
                      for s in range(1, a.submitters + 1)]
        waiting_done = threading.Event()
        waiters = [threading.Thread(target=load.waiter, args=(waiting_done,), daemon=True) for _ in range(3)]
        for t in submitters + waiters:
            t.start()
        nemesis.run(until)
        nemesis.heal()
        c.check_alive()
        healed = time.monotonic()
        print(f"  {healed - T0:6.1f} s  healed; waiting for the submitters and every acknowledged job", flush=True)
        # Workers that exit by themselves now are counted and started again too, or nothing could end.
        for t in submitters + nemesis.extra:
            while t.is_alive() and time.monotonic() < a.final_deadline:
                c.check_alive()
                t.join(0.5)
        waiting_done.set()
        for t in waiters:
            while t.is_alive() and time.monotonic() < a.final_deadline + 5:
                c.check_alive()
                t.join(0.5)
        c.check_alive()
        drained = time.monotonic()

        # The checker.
        # The master's own record, read afresh for a sample of jobs, must be what the waiters saw.
        changed = 0
        sample = random.Random(a.seed).sample(sorted(load.outcomes), min(20, len(load.outcomes)))
        for job in sample:
            code, out, err = c.run("c", ["results", str(job), "--json"], timeout=30)
            now = {o["task"]: (o["status"], o.get("result")) for o in map(json.loads, out.splitlines())}
            seen = {o["task"]: (o["status"], o.get("result")) for o in load.outcomes[job]}
            if code not in (0, 1) or now != seen:
                changed += 1
                print(f"jepsen: job {job}: results (exit {code}) differ from what wait printed", flush=True)
        code, out, err = c.run("c", ["status", "--json"], timeout=30)
        counters = json.loads(out)["counters"] if code == 0 else f"status failed: {err.strip()}"

        # Job by job (an outcome in the wrong job is unexpected there, and lost in its own), then
        # over all jobs at once (args are unique across jobs: no task may have outcomes in two).
        counts, outcomes, expected, unwaited = Counter(), [], [], 0
        for key, job in load.acked.items():
            if job not in load.outcomes:
                unwaited += 1
            counts.update(check_outcomes.count(load.submitted[key], load.outcomes.get(job, [])))
            expected += load.submitted[key]
            outcomes += load.outcomes.get(job, [])
        across = check_outcomes.count(expected, outcomes)
        counts["duplicated"] = max(counts["duplicated"], across["duplicated"])
        # Jobs that were never acknowledged may or may not exist; they are not followed.
        statuses = Counter(o["status"] for o in outcomes)
        faults = ", ".join(f"{k} {nemesis.faults[k]}" for k in nemesis.kinds)
        print(f"jepsen: faults injected: {faults} (total {sum(nemesis.faults.values())})")
        print(f"jepsen: submissions {len(load.submitted)}, acknowledged {len(load.acked)}, never acknowledged "
              f"{len(load.unacked)}; failed submit attempts by exit code {dict(load.failed_tries)}; "
              f"failed waits by exit code {dict(load.wait_failures)}")
        print(f"jepsen: tasks acknowledged {counts['submitted']}, outcomes {counts['outcomes']} {dict(statuses)}, "
              f"run more than once {counts['retried']}")
        print(f"jepsen: lost {counts['lost']}, duplicated {counts['duplicated']}, unexpected {counts['unexpected']}, "
              f"wrong {counts['wrong']} (timed out {counts['timed_out']}); jobs not followed to their end {unwaited}; "
              f"one key, two jobs: {len(load.double_jobs)}; self-exits: {c.self_exits or 0}")
        print(f"jepsen: results re-read for {len(sample)} jobs, {changed} differ; the last master's counters: {counters}")
        print(f"jepsen: wall time {drained - T0:.0f} s, of which {drained - healed:.0f} s after healing")
        good = (check_outcomes.ok(counts) and not load.double_jobs and not c.self_exits and unwaited == 0
                and changed == 0)
        print("jepsen: ok" if good else "jepsen: FAIL")
        return 0 if good else 1
    except Stop:
        print("jepsen: stopped by SIGTERM", flush=True)
        return 1
    finally:
        try:
            nemesis.heal()
        finally:
            c.stop_all()


if __name__ == "__main__":
    sys.exit(main())
