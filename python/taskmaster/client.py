"""A TASKMASTER/1 client (PROTOCOL.md §5.3, §5.4, §6.8-§6.12)."""

import itertools
import secrets
import threading
import time
from dataclasses import dataclass, field


from . import _conn
from .errors import Error, KeyReused, TaskFailed, Unreachable, UsageError

BATCH_TASKS = 10000           # tasks per SUBMIT at most
BATCH_BYTES = 8 * 1024 * 1024  # args bytes per SUBMIT at most (a body stays well under 16 MiB)
WAIT_MAX = 10000


@dataclass
class Job:
    """A submitted job: its id, the ids of its tasks in submission order, and whether the master already
    had it (a resent idempotency key)."""
    id: int
    tasks: list = field(default_factory=list)
    duplicate: bool = False

    def __int__(self):
        return self.id


@dataclass
class Outcome:
    """How one task finished (OUTCOMES entry, §6.10.2)."""
    task: int
    args: object
    status: str            # "done", "dead" or "cancelled"
    result: object = None  # when done
    error: str = None      # when dead (or why it was cancelled)
    attempts: int = 0
    worker: str = ""

    @classmethod
    def from_json(cls, o):
        return cls(task=o.get("task"), args=o.get("args"), status=o.get("status"), result=o.get("result"),
                   error=o.get("error"), attempts=o.get("attempts", 0), worker=o.get("worker", ""))


def _seconds_ms(what, seconds, lo, hi):
    if seconds is None:
        return None
    try:
        ms = round(float(seconds) * 1000)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a number of seconds, not {seconds!r}") from None
    if not lo <= ms <= hi:
        raise UsageError(f"{what} must be {lo / 1000:g} to {hi / 1000:g} seconds, not {seconds!r}")
    return ms


class Client:
    """A client of a master. `key_file=None` finds the key as the CLI does (§9.2); `insecure=True`
    runs without one. Waits `connect_timeout` seconds for the first connection and `retry_timeout`
    seconds without any reply before raising Unreachable. One Client may be shared by threads: its
    requests take turns."""

    def __init__(self, endpoint="tcp://127.0.0.1:5555", key_file=None, insecure=False, connect_timeout=5.0,
                 retry_timeout=60.0):
        self.connect_timeout = float(connect_timeout)
        self.retry_timeout = float(retry_timeout)
        self._conn = _conn.Connection(endpoint, key_file, insecure)
        self._req = itertools.count(1)
        self._lock = threading.RLock()
        self._started = time.monotonic()

    @property
    def endpoint(self):
        return self._conn.endpoint

    def close(self):
        with self._lock:
            self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- one request ---------------------------------------------------------------------------------

    def _request(self, command, body, hold_ms=0, expect=()):
        """Sends the request, resends it as §5.4 says, and returns the reply (command, body)."""
        with self._lock:
            return self._request_locked(command, body, hold_ms, expect)

    def _request_locked(self, command, body, hold_ms, expect):
        c = self._conn
        body = dict(body, req=next(self._req))
        data = _conn.dumps(body)
        patience = 2.0 + hold_ms / 1000
        backoff = 0.25
        last_heard = time.monotonic()
        sent_at = None
        while True:
            now = time.monotonic()
            if c.events() == "connected" and sent_at is not None:
                sent_at = None  # the connection came back: resend at once
            if not c.ever_connected and now - self._started > self.connect_timeout and not c.probing:
                raise Unreachable(f"cannot reach the master at {c.endpoint} (no connection in "
                                  f"{self.connect_timeout:g} s)")
            if now - last_heard > self.retry_timeout + hold_ms / 1000:
                raise Unreachable(f"the master at {c.endpoint} did not answer for {self.retry_timeout:g} s")
            if sent_at is None or now - sent_at > patience:
                if c.send(command, data):
                    sent_at = now
            if c.socket.poll(50):
                while (msg := c.recv()) is not None:
                    cmd, reply = msg
                    if cmd == "ERROR" and reply.get("req") == 0:
                        raise Error(f"the master refused a request: {reply.get('message')}", reply.get("code"))
                    if reply.get("req") != body["req"]:
                        continue  # an answer to an earlier copy, or to a request we gave up on
                    last_heard = time.monotonic()
                    if cmd == "ERROR":
                        if reply.get("code") == "unavailable":
                            time.sleep(backoff)
                            backoff = min(backoff * 2, 2.0)
                            sent_at = None
                            continue
                        cls = KeyReused if reply.get("code") == "key_reused" else Error
                        raise cls(f"{command}: {reply.get('message')}", reply.get("code"))
                    if expect and cmd not in expect:
                        raise Error(f"{command}: unexpected reply {cmd}")
                    return cmd, reply

    # --- submitting ----------------------------------------------------------------------------------

    @staticmethod
    def _defaults(function, queue, priority, delay, timeout, max_attempts, backoff):
        d = {"function": _conn.check_name("function", function), "queue": _conn.check_name("queue", queue)}
        if not isinstance(priority, int) or not -1000000 <= priority <= 1000000:
            raise UsageError(f"priority must be an integer -1000000 to 1000000, not {priority!r}")
        d["priority"] = priority
        d["delay_ms"] = _seconds_ms("delay", delay, 0, 31622400000)
        d["timeout_ms"] = _seconds_ms("timeout", timeout, 1, 604800000)
        if not isinstance(max_attempts, int) or not 1 <= max_attempts <= 1000:
            raise UsageError(f"max_attempts must be an integer 1 to 1000, not {max_attempts!r}")
        d["max_attempts"] = max_attempts
        d["backoff_ms"] = _seconds_ms("backoff", backoff, 0, 86400000)
        return d

    def submit(self, function, args=None, **options):
        """Submits a job of one task: function(args). Returns its Job. Options as submit_many."""
        return self.submit_many(function, [args], **options)

    def submit_many(self, function, iterable, *, queue="default", priority=0, delay=0, timeout=300,
                    max_attempts=3, backoff=1, idempotency_key=None, after=None, after_success=False):
        """Submits a job of one task per item of `iterable` (each item is a task's args, any JSON value),
        in batches of at most 10000 tasks. Returns its Job, whose `tasks` are in the iterable's order.
        `idempotency_key` (default: 128 random bits) makes a resubmission return the same job; `after` is
        a list of jobs this one waits for (`after_success`: and cancels itself unless they all succeed)."""
        defaults = self._defaults(function, queue, priority, delay, timeout, max_attempts, backoff)
        key = secrets.token_hex(16) if idempotency_key is None else idempotency_key
        if not isinstance(key, str) or len(key.encode()) > 256 or key.startswith("retry-of-"):
            raise UsageError("idempotency_key must be text of at most 256 bytes, not beginning with 'retry-of-'")
        waits = [int(j) for j in (after or [])]
        if after_success and not waits:
            raise UsageError("after_success needs after")
        batches = self._batches(iterable)
        batch = next(batches, None)
        if batch is None:
            raise UsageError("a job needs at least one task")
        job, seq = None, 0
        while batch is not None:
            following = next(batches, None)
            body = {"more": following is not None, "tasks": batch}
            if job is None:
                body.update(idempotency_key=key, defaults=defaults)
                if waits:
                    body.update(after=waits, after_success=bool(after_success))
            else:
                body.update(job=job.id, seq=seq, defaults=defaults)
            _, acc = self._request("SUBMIT", body, expect=("ACCEPTED",))
            if job is None:
                job = Job(acc["job"], duplicate=acc.get("duplicate", False))
            job.tasks.extend(range(acc["first_task"], acc["first_task"] + acc["count"]))
            seq += 1
            batch = following
        return job

    @staticmethod
    def _batches(iterable):
        batch, size = [], 0
        for n, args in enumerate(iterable):
            try:
                data = _conn.check_value(f"args of task {n}", args)
            except ValueError as e:
                raise UsageError(str(e)) from None
            if batch and (len(batch) >= BATCH_TASKS or size + len(data) > BATCH_BYTES):
                yield batch
                batch, size = [], 0
            batch.append({"args": args})
            size += len(data) + 10
        if batch:
            yield batch

    # --- outcomes ------------------------------------------------------------------------------------

    def outcomes(self, job, after=0, timeout=0.0, max=WAIT_MAX):
        """One WAIT (§6.10): the job's outcomes after the first `after` finished ones, waiting up to
        `timeout` seconds for one. Returns the OUTCOMES body, its outcomes as Outcome objects."""
        hold = _seconds_ms("timeout", timeout, 0, 3600000)
        _, body = self._request("WAIT", {"job": int(job), "after": after, "max": max, "timeout_ms": hold},
                                hold_ms=hold, expect=("OUTCOMES",))
        body["outcomes"] = [Outcome.from_json(o) for o in body["outcomes"]]
        return body

    def wait(self, job, timeout=None, on_outcome=None):
        """Waits until the job has ended; returns every Outcome, in the order the tasks finished.
        `timeout` (seconds, None: for ever) raises TimeoutError; `on_outcome` is called with each."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor, got = 0, []
        while True:
            hold = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            body = self.outcomes(job, after=cursor, timeout=hold)
            for o in body["outcomes"]:
                got.append(o)
                if on_outcome:
                    on_outcome(o)
            cursor = body["after"] + len(body["outcomes"])
            if body.get("sealed") and body["finished"] == body["total"] and cursor == body["total"]:
                return got
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {int(job)} has not ended after {timeout:g} s "
                                   f"({body['finished']} of {body['total']} tasks finished)")

    def results(self, job, timeout=None):
        """The job's results in submission order (task id order); raises TaskFailed if a task is dead
        or cancelled."""
        outs = sorted(self.wait(job, timeout), key=lambda o: o.task)
        failed = [o for o in outs if o.status != "done"]
        if failed:
            f = failed[0]
            raise TaskFailed(f"{len(failed)} of {len(outs)} tasks of job {int(job)} failed; task {f.task} "
                             f"({_conn.dumps(f.args).decode()}) is {f.status}: {f.error or ''}".rstrip(": "),
                             outs, failed)
        return [o.result for o in outs]

    def map(self, function, iterable, **options):
        """function(x) for each x, run by the workers: the results in input order. Raises TaskFailed
        when a task is dead or cancelled. Options as submit_many (timeout: of each attempt)."""
        job = self.submit_many(function, iterable, **options)
        return self.results(job)

    # --- the rest ------------------------------------------------------------------------------------

    def cancel(self, job):
        """Cancels the job's tasks that have not started (§6.11); returns how many."""
        _, body = self._request("CANCEL", {"job": int(job)}, expect=("CANCELLED",))
        return body["cancelled"]

    def retry(self, job):
        """Runs the ended job's dead tasks again as a new job (§6.15); returns it."""
        _, acc = self._request("RETRY", {"job": int(job)}, expect=("ACCEPTED",))
        return Job(acc["job"], list(range(acc["first_task"], acc["first_task"] + acc["count"])),
                   acc.get("duplicate", False))

    def status(self):
        """The master's state (REPORT `status`, §6.12.2) as a dict."""
        _, body = self._request("STATUS", {}, expect=("REPORT",))
        return body["status"]


__all__ = ["Client", "Job", "Outcome"]
