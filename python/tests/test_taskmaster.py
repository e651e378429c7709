"""Tests of python/taskmaster against a real master (the taskmaster binary in $TASKMASTER_BINARY).

Run: TASKMASTER_BINARY=build/cli/taskmaster PYTHONPATH=python /usr/bin/python3 -m unittest discover -s python/tests
$TASKMASTER_PY_SQUARES sets the size of the squares job (default 100000)."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

import taskmaster

BINARY = os.environ.get("TASKMASTER_BINARY", "build/cli/taskmaster")
SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = "/usr/bin/python3"
SQUARES = int(os.environ.get("TASKMASTER_PY_SQUARES", "100000"))


def wait_for(what, condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def make_key(directory, name="key"):
    path = os.path.join(directory, name)
    subprocess.run([BINARY, "keygen", "-o", path], check=True, capture_output=True)
    return path


class Master:
    """A master on 127.0.0.1 (port 0), stopped by PID."""

    def __init__(self, key, port=0, data_dir=None):
        args = [BINARY, "master", "--bind", f"tcp://127.0.0.1:{port}", "-k", key]
        args += ["--data-dir", data_dir] if data_dir else ["--in-memory"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()  # the master prints its endpoint first
        if not line.startswith("tcp://"):
            self.stop()
            raise AssertionError(f"the master printed no endpoint: {line!r} {self.proc.stderr.read()}")
        self.endpoint = line
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


WORKER_SCRIPT = textwrap.dedent("""
    import json, os, sys, time, taskmaster
    # argv: ENDPOINT KEY_FILE [OPTIONS]: OPTIONS a JSON object of Worker's keyword arguments
    options = {"threads": 4, "queues": ["default"], **(json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})}
    w = taskmaster.Worker(sys.argv[1], key_file=sys.argv[2], **options)
    @w.function
    def shout(s): return s.upper() + "!"
    @w.function
    def square(x): return x * x
    @w.function
    def boom(x): raise RuntimeError("boom " + str(x))
    @w.function
    def nap(s):
        time.sleep(s)
        return "rested"
    @w.function
    def whoami(x): return [x * x, os.getpid()]
    @w.function
    def flaky(path):
        if not os.path.exists(path):
            raise RuntimeError("not yet: " + path)
        return "ok"
    print("pid", os.getpid(), flush=True)
    print("ready", flush=True)
    w.run()
    print("stopped", w.completed, flush=True)
""")


class Cluster(unittest.TestCase):
    """A fresh key and master per test, and Python workers as processes."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.key = make_key(self.tmp.name)
        self.master = Master(self.key)
        self.addCleanup(self.master.stop)
        self.script = os.path.join(self.tmp.name, "worker.py")
        with open(self.script, "w") as f:
            f.write(WORKER_SCRIPT)
        self.addCleanup(self.tmp.cleanup)

    def env(self):
        return dict(os.environ, PYTHONPATH=os.path.join(SOURCE, "python"))

    def start_worker(self, endpoint=None, **options):
        args = [PYTHON, self.script, endpoint or self.master.endpoint, self.key]
        args += [json.dumps(options)] if options else []
        p = subprocess.Popen(args, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def stop():
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()
        self.addCleanup(stop)
        p.worker_pid = int(p.stdout.readline().split()[1])  # "pid N"
        self.assertEqual(p.stdout.readline().strip(), "ready")
        return p

    def client(self, **kw):
        c = taskmaster.Client(self.master.endpoint, key_file=self.key, **kw)
        self.addCleanup(c.close)
        return c

    def wait_for_workers(self, c, n):
        wait_for(f"{n} workers", lambda: len(c.status()["workers"]) == n)


class KeyTest(unittest.TestCase):
    def test_the_derivation_gives_the_vectors_of_protocol_md(self):
        with open(os.path.join(SOURCE, "docs", "PROTOCOL.md")) as f:
            text = f.read()
        block = text.split("<!-- vectors: key-derivation -->", 1)[1].split("```")[1]
        lines = [l.split() for l in block.strip().splitlines()]
        self.assertEqual(len(lines), 3)
        for key, *expected in lines:
            got = [k.decode() for k in taskmaster.derive_keys_z85(key.encode())]
            self.assertEqual(got, expected, key)

    def test_the_key_is_found_and_checked_as_the_cli_does(self):
        with tempfile.TemporaryDirectory() as d:
            good = os.path.join(d, "k")
            with open(good, "wb") as f:
                f.write(b"x" * 32 + b"\r\n \t\n")
            os.chmod(good, 0o600)
            self.assertEqual(taskmaster.load_key_file(good), b"x" * 32)
            os.chmod(good, 0o640)
            with self.assertRaisesRegex(taskmaster.AuthFailed, r"accessible by group or others \(mode 0640\)"):
                taskmaster.load_key_file(good)
            short = os.path.join(d, "s")
            with open(short, "wb") as f:
                f.write(b"y" * 31 + b"\n")
            os.chmod(short, 0o600)
            with self.assertRaisesRegex(taskmaster.AuthFailed, "too short"):
                taskmaster.load_key_file(short)
            env = {"HOME": d, "XDG_CONFIG_HOME": "", "TASKMASTER_KEY_FILE": "", "TASKMASTER_KEY": None}
            saved = {k: os.environ.get(k) for k in env}
            try:
                for k, v in env.items():
                    os.environ.pop(k, None)
                    if v is not None:
                        os.environ[k] = v
                with self.assertRaisesRegex(taskmaster.AuthFailed, "no key"):
                    taskmaster.find_key()
                os.environ["TASKMASTER_KEY"] = ""  # present, even empty: used (and refused), §9.2
                with self.assertRaisesRegex(taskmaster.AuthFailed, "TASKMASTER_KEY is empty"):
                    taskmaster.find_key()
                os.environ["TASKMASTER_KEY"] = "z" * 40 + "\n"
                self.assertEqual(taskmaster.find_key(), b"z" * 40)
                os.environ["TASKMASTER_KEY_FILE"] = short  # before TASKMASTER_KEY, and not skipped when bad
                with self.assertRaisesRegex(taskmaster.AuthFailed, "too short"):
                    taskmaster.find_key()
                self.assertEqual(taskmaster.find_key(good if os.chmod(good, 0o400) is None else None), b"x" * 32)
            finally:
                for k, v in saved.items():
                    os.environ.pop(k, None)
                    if v is not None:
                        os.environ[k] = v

    def test_bad_endpoints_are_usage_errors(self):
        for bad in ("tcp://127.0.0.1:99999", "nowhere", "udp://x:1", "tcp://h:0"):
            with self.assertRaises(taskmaster.UsageError, msg=bad):
                taskmaster.Client(bad, insecure=True)
        self.assertEqual(taskmaster.UsageError.exit_code, 2)


class ClientWorkerTest(Cluster):
    def test_a_python_function_serves_the_cli_and_the_python_client(self):
        self.start_worker()
        out = subprocess.run([BINARY, "submit", "shout", "hi", "--wait", "-c", self.master.endpoint, "-k", self.key],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual((out.returncode, out.stdout), (0, '"hi" -> "HI!"\n'), out.stderr)
        c = self.client()
        self.assertEqual(c.map("shout", ["a", "b"], queue="default"), ["A!", "B!"])
        job = c.submit("shout", "one")
        self.assertEqual(c.results(job), ["ONE!"])
        outs = c.wait(job)
        self.assertEqual((outs[0].status, outs[0].args, outs[0].attempts), ("done", "one", 1))

    def test_a_dead_task_raises_task_failed_with_the_functions_error(self):
        self.start_worker()
        c = self.client()
        with self.assertRaises(taskmaster.TaskFailed) as e:
            c.map("boom", [1, 2], max_attempts=1)
        self.assertEqual(e.exception.exit_code, 1)
        self.assertEqual(len(e.exception.failed), 2)
        self.assertIn("boom: RuntimeError: boom 1", sorted(o.error for o in e.exception.failed)[0])
        out = subprocess.run([BINARY, "submit", "boom", "7", "--max-attempts", "1", "--wait", "-c", self.master.endpoint,
                              "-k", self.key], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("boom 7", out.stdout + out.stderr)

    def test_a_job_of_squares_in_batches_comes_back_in_order(self):
        self.start_worker()
        c = self.client()
        t = time.monotonic()
        job = c.submit_many("square", range(SQUARES))
        self.assertEqual(len(job.tasks), SQUARES)
        got = c.results(job)
        took = time.monotonic() - t
        self.assertEqual(got, [i * i for i in range(SQUARES)])
        print(f"\n{SQUARES} squares through a Python worker (4 threads) and client: {took:.2f} s, "
              f"{SQUARES / took:.0f} tasks/s", file=sys.stderr)

    def test_status_cancel_and_an_idempotency_key(self):
        c = self.client()
        job = c.submit_many("shout", ["x", "y", "z"], idempotency_key="py-test-1")
        again = c.submit_many("shout", ["x", "y", "z"], idempotency_key="py-test-1")
        self.assertEqual((again.id, again.duplicate, again.tasks), (job.id, True, job.tasks))
        # The same key for other args, or another function, is refused, not answered with the old job.
        for other in (lambda: c.submit_many("shout", ["x", "y", "w"], idempotency_key="py-test-1"),
                      lambda: c.submit_many("echo", ["x", "y", "z"], idempotency_key="py-test-1")):
            with self.assertRaises(taskmaster.KeyReused) as e:
                other()
            self.assertEqual((e.exception.code, e.exception.exit_code), ("key_reused", 5))
            self.assertIn(f"was used for a different job ({job.id})", str(e.exception))
        self.assertEqual(c.status()["queues"]["default"]["queued"], 3)
        self.assertEqual(c.cancel(job), 3)
        self.assertEqual([o.status for o in c.wait(job, timeout=10)], ["cancelled"] * 3)
        with self.assertRaises(taskmaster.Error) as e:
            c.cancel(987654321)
        self.assertEqual((e.exception.code, e.exception.exit_code), ("unknown_job", 5))

    def test_processes_run_the_functions_in_forked_processes(self):
        w = self.start_worker(processes=2)
        c = self.client()
        got = c.map("whoami", range(200))
        self.assertEqual([r[0] for r in got], [i * i for i in range(200)])
        pids = {r[1] for r in got}
        self.assertNotIn(w.worker_pid, pids)  # not the worker's own process
        self.assertLessEqual(len(pids), 2)
        with self.assertRaises(taskmaster.TaskFailed) as e:  # an exception in a child is the task's error
            c.map("boom", [5], max_attempts=1)
        self.assertIn("boom 5", e.exception.failed[0].error)

    def test_reserved_tasks_are_given_back_on_cancel_and_never_run(self):
        # One thread and a prefetch of 3 (feature reserve, PROTOCOL.md §6.14): one nap runs, three wait
        # on the worker; cancelling the job takes those three back unrun.
        self.start_worker(threads=1, prefetch=3)
        c = self.client()
        self.wait_for_workers(c, 1)
        job = c.submit_many("nap", [1.5] * 4)
        wait_for("1 running and 3 reserved", lambda: (lambda q: (q["running"], q["reserved"]))(
            c.status()["queues"]["default"]) == (4, 3))
        worker = c.status()["workers"][0]
        self.assertEqual((worker["running"], worker["reserved"]), (1, 3))
        self.assertEqual(c.cancel(job), 0)  # nothing queued: the 3 reserved are asked back
        outs = c.wait(job, timeout=30)
        self.assertEqual(sorted(o.status for o in outs), ["cancelled"] * 3 + ["done"])
        self.assertEqual([o.result for o in outs if o.status == "done"], ["rested"])

    def test_retry_runs_the_dead_tasks_again_as_a_new_job(self):
        self.start_worker()
        c = self.client()
        flag = os.path.join(self.tmp.name, "flag")
        job = c.submit_many("flaky", [flag, flag], max_attempts=1)
        self.assertEqual([o.status for o in c.wait(job, timeout=30)], ["dead", "dead"])
        with self.assertRaises(taskmaster.TaskFailed):
            c.results(job)
        open(flag, "w").close()
        again = c.retry(job)
        self.assertNotEqual(again.id, job.id)
        self.assertEqual(len(again.tasks), 2)
        self.assertEqual(c.results(again, timeout=30), ["ok", "ok"])
        self.assertEqual(c.retry(job).id, again.id)  # a job is retried once: the same new job
        with self.assertRaises(taskmaster.Error) as e:
            c.retry(987654321)
        self.assertEqual(e.exception.code, "unknown_job")

    def test_sigterm_drains_the_worker(self):
        w = self.start_worker()
        c = self.client()
        self.wait_for_workers(c, 1)
        job = c.submit("nap", 1.0)
        wait_for("the nap to run", lambda: c.status()["queues"]["default"]["running"] == 1)
        w.send_signal(signal.SIGTERM)
        self.assertEqual(w.wait(30), 0)
        self.assertEqual(w.stdout.read().strip(), "stopped 1")
        self.assertEqual(c.results(job, timeout=10), ["rested"])
        self.wait_for_workers(c, 0)  # it said BYE

    def test_the_worker_comes_back_after_a_master_restart(self):
        data = os.path.join(self.tmp.name, "data")
        self.master.stop()
        self.master = Master(self.key, data_dir=data)
        self.addCleanup(self.master.stop)
        self.start_worker()
        port = self.master.port
        c = self.client()
        self.assertEqual(c.map("square", [3]), [9])
        self.master.stop()
        self.master = Master(self.key, port=port, data_dir=data)
        self.addCleanup(self.master.stop)
        c2 = self.client()
        self.wait_for_workers(c2, 1)
        self.assertEqual(c2.map("square", [4, 5]), [16, 25])

    def test_a_wrong_key_fails_with_auth_failed(self):
        other = make_key(self.tmp.name, "other")
        t = time.monotonic()
        with self.assertRaises(taskmaster.AuthFailed) as e:
            with taskmaster.Client(self.master.endpoint, key_file=other) as c:
                c.status()
        self.assertIn("different key", str(e.exception))
        self.assertLess(time.monotonic() - t, 15)
        self.assertEqual(e.exception.exit_code, 4)
        with self.assertRaises(taskmaster.AuthFailed):
            with taskmaster.Client(self.master.endpoint, insecure=True) as c:
                c.status()
        w = taskmaster.Worker(self.master.endpoint, key_file=other)
        w.function(lambda x: x, name="same")
        with self.assertRaises(taskmaster.AuthFailed):
            w.run()

    def test_no_master_is_unreachable(self):
        self.master.stop()
        c = taskmaster.Client(self.master.endpoint, key_file=self.key, connect_timeout=0.5)
        self.addCleanup(c.close)
        with self.assertRaises(taskmaster.Unreachable) as e:
            c.status()
        self.assertEqual(e.exception.exit_code, 3)


if __name__ == "__main__":
    unittest.main()
