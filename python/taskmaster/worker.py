"""A TASKMASTER/1 worker (PROTOCOL.md §5.1, §5.2, §6.1-§6.7): runs plain Python functions."""

import concurrent.futures
import os
import secrets
import signal
import socket
import threading
import time
import traceback

import zmq

from . import _conn
from .errors import UsageError

_FUNCTIONS = {}  # worker id -> {name: function}; module-level so that forked processes find them


def _call(worker_id, name, args):
    """Runs one task; returns ("result", bytes of compact JSON) or ("error", message)."""
    try:
        value = _FUNCTIONS[worker_id][name](args)
    except BaseException as e:  # noqa: BLE001 - any failure of the function is the task's error
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return "error", _conn.cut_utf8(f"{name}: {text}", _conn.MAX_ERROR_BYTES)
    try:
        return "result", _conn.check_value("result", value)
    except ValueError as e:
        return "error", f"{name}: result {e}"


class Worker:
    """Serves the functions registered with @worker.function to a master.

    threads: tasks run at once, on threads (processes=N instead runs them in N forked processes: for
    CPU-bound functions; the functions must be registered before run()). prefetch: tasks held beyond the
    running ones (default: as many as threads). queues: the queues served (names, or (name, weight)).
    A function is called with the task's args as its one argument; its return value (any JSON value) is
    the result, an exception the error ("function: Type: message")."""

    def __init__(self, endpoint="tcp://127.0.0.1:5555", key_file=None, threads=4, queues=("default",),
                 insecure=False, processes=None, prefetch=None, name=None):
        self.endpoint = _conn.normalize_endpoint(endpoint)
        self._key_file, self._insecure = key_file, insecure
        _conn.security(key_file, insecure)  # fail early on a missing or bad key
        self.processes = processes
        runners = processes if processes is not None else threads
        if not isinstance(runners, int) or not 1 <= runners <= 4096:
            raise UsageError(f"threads/processes must be 1 to 4096, not {runners!r}")
        self.threads = runners
        self.prefetch = runners if prefetch is None else prefetch
        if not isinstance(self.prefetch, int) or not 0 <= self.prefetch <= 100000 - runners:
            raise UsageError(f"prefetch must be 0 to {100000 - runners}, not {prefetch!r}")
        if isinstance(queues, str):
            queues = [queues]
        self.queues, self.weights = [], []
        for q in queues:
            qname, weight = (q if isinstance(q, (tuple, list)) else (q, 1))
            self.queues.append(_conn.check_name("queue", qname))
            if not isinstance(weight, int) or not 1 <= weight <= 1000:
                raise UsageError(f"queue weight must be 1 to 1000, not {weight!r}")
            self.weights.append(weight)
        if not self.queues:
            raise UsageError("a worker serves at least one queue")
        self.host = socket.gethostname()[:256]
        self.name = name or f"{self.host}-{os.getpid()}-{secrets.token_hex(2)}"
        self.session = secrets.randbelow(2**63 - 1) + 1
        self._id = f"{id(self)}-{self.session}"
        _FUNCTIONS[self._id] = {}
        self._stop = None  # None, "drain" or "now"
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._done = []  # finished attempts: (task, attempt, kind, payload), appended by the pool's threads
        self._done_lock = threading.Lock()
        self.completed = 0

    def function(self, fn=None, *, name=None):
        """Decorator: registers fn under its name (or `name`); returns fn unchanged."""
        def register(f):
            _FUNCTIONS[self._id][_conn.check_name("function name", name or f.__name__)] = f
            return f
        return register(fn) if fn is not None else register

    def stop(self, drain=True):
        """Asks run() to return: drain=True takes no new tasks and finishes the held ones first."""
        self._stop = "now" if not drain or self._stop == "drain" else "drain"
        os.write(self._wake_w, b"x")

    # --- the loop ------------------------------------------------------------------------------------

    def run(self):
        """Serves until stop(), SIGTERM (drains: no new tasks, held ones finish and are acknowledged,
        then BYE; a second SIGTERM stops at once) or SIGINT (stops at once). Reconnects for ever."""
        if not _FUNCTIONS[self._id]:
            raise UsageError("no function registered: decorate one with @worker.function")
        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig, drain in ((signal.SIGTERM, True), (signal.SIGINT, False)):
                old[sig] = signal.signal(sig, lambda *_a, d=drain: self.stop(d))
        pool = (concurrent.futures.ProcessPoolExecutor(self.processes) if self.processes
                else concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="taskmaster-task"))
        conn = _conn.Connection(self.endpoint, self._key_file, self._insecure)
        try:
            self._loop(conn, pool)
        finally:
            conn.close()
            pool.shutdown(wait=self._stop != "now", cancel_futures=True)
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _finished(self, task, attempt, future):
        if future.cancelled():
            return  # given back to the master (REVOKE, §6.14.2): it never ran
        try:
            kind, payload = future.result()
        except BaseException as e:  # noqa: BLE001 - e.g. a process of the pool died
            kind, payload = "error", f"the worker could not run the task: {type(e).__name__}: {e}"
        with self._done_lock:
            self._done.append((task, attempt, kind, payload))
            first = len(self._done) == 1
        if first:
            os.write(self._wake_w, b"x")

    def _loop(self, conn, pool):
        held = {}       # task -> attempt: received, not yet acknowledged (running or result unacked)
        futures = {}    # task -> (attempt, Future) of the held attempts whose result is not in yet
        reported = set()  # tasks whose attempt this session was told began (feature reserve, §6.14.1)
        reserve = False   # this session speaks feature "reserve" (both HELLO and WELCOME list it)
        unacked = {}    # task -> (attempt, JSON bytes of its RESULTS entry)
        fresh = []      # entries not sent since they finished
        registered = False
        heartbeat, timeout = 1.0, 3.0
        last_sent = last_heard = hello_at = 0.0
        hello_wait = 0.25
        draining = False
        poller = zmq.Poller()
        poller.register(conn.socket, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)

        def send(command, body):
            nonlocal last_sent
            if conn.send(command, body):
                last_sent = time.monotonic()
                return True
            return False

        def hello():
            nonlocal registered, hello_at, last_heard
            registered = False
            body = {"worker": self.name, "host": self.host, "pid": os.getpid(),
                    "functions": sorted(_FUNCTIONS[self._id]), "queues": self.queues,
                    "slots": 0 if draining else self.threads + self.prefetch, "session": self.session,
                    "threads": self.threads, "features": ["reserve"],
                    "running": [{"task": t, "attempt": a} for t, a in held.items()]}
            if any(w != 1 for w in self.weights):
                body["weights"] = self.weights
            send("HELLO", body)
            hello_at = last_heard = time.monotonic()

        def send_results(entries):
            # Several RESULTS if needed, each well under the message limit.
            chunk, size = [], 0
            for e in entries:
                if chunk and (size + len(e) > 8 * 1024 * 1024 or len(chunk) >= 10000):
                    send("RESULTS", b'{"results":[' + b",".join(chunk) + b"]}")
                    chunk, size = [], 0
                chunk.append(e)
                size += len(e) + 1
            if chunk:
                send("RESULTS", b'{"results":[' + b",".join(chunk) + b"]}")

        while True:
            now = time.monotonic()
            if self._stop == "now":
                if registered:
                    send("BYE", {})
                return
            if self._stop == "drain" and not draining:
                draining = True
                if registered:
                    send("CREDIT", {"slots": 0})
            if draining and not held and registered:
                send("BYE", {})
                return
            if draining and not held and not conn.ever_connected:
                return
            if conn.events() == "connected":
                hello_wait = 0.25
                hello()
            if not registered and conn.connected and now - hello_at > hello_wait:
                hello_wait = min(hello_wait * 2, 2.0)
                hello()
            if registered and now - last_heard > timeout:
                hello()  # the master fell silent: it may have restarted or presumed us dead (§5.1)
            elif registered and now - last_sent > heartbeat:
                send("HEARTBEAT", {})
            for sock, _ in poller.poll(100 if not fresh else 0):
                if sock == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
            with self._done_lock:
                done, self._done = self._done, []
            for task, attempt, kind, payload in done:
                if futures.get(task, (None,))[0] == attempt:
                    del futures[task]
                    reported.discard(task)
                if held.get(task) != attempt:
                    continue  # acknowledged meanwhile (the master dropped it): nothing to report
                if kind == "result":
                    entry = b'{"task":%d,"attempt":%d,"result":' % (task, attempt) + payload + b"}"
                else:
                    entry = b'{"task":%d,"attempt":%d,"error":' % (task, attempt) + _conn.dumps(payload) + b"}"
                unacked[task] = (attempt, entry)
                fresh.append(entry)
                self.completed += 1
            if reserve and registered:
                # Attempts a runner has taken since the last look (a thread began it, or the process
                # pool moved it to its call queue): reported once; one that began and ended in between
                # is reported by its result alone.
                began = [t for t, (a, f) in futures.items() if t not in reported and f.running()]
                if began:
                    reported.update(began)
                    send("STARTED", {"tasks": [{"task": t, "attempt": futures[t][0]} for t in began]})
            if fresh and registered:
                send_results(fresh)
                fresh = []
            while (msg := conn.recv()) is not None:
                cmd, body = msg
                last_heard = time.monotonic()
                if cmd == "WELCOME":
                    hb, to = body.get("heartbeat_ms"), body.get("timeout_ms")
                    if isinstance(hb, int) and isinstance(to, int) and hb > 0 and to > 0:
                        heartbeat, timeout = hb / 1000, to / 1000
                    registered = True
                    reserve = "reserve" in (body.get("features") or [])
                    reported.clear()  # a new session: every attempt running is reported again
                    fresh = []
                    if draining:
                        send("CREDIT", {"slots": 0})
                    send_results([e for _a, e in unacked.values()])
                elif cmd == "TASKS":
                    for t in body.get("tasks", []):
                        task, attempt, fn = t.get("task"), t.get("attempt"), t.get("function")
                        if not isinstance(task, int) or not isinstance(attempt, int):
                            continue
                        if held.get(task) == attempt:
                            continue  # already have it
                        held[task] = attempt
                        if fn not in _FUNCTIONS[self._id]:
                            fut = concurrent.futures.Future()
                            fut.set_result(("error", f"no function {fn!r} on this worker"))
                        else:
                            fut = pool.submit(_call, self._id, fn, t.get("args"))
                            futures[task] = (attempt, fut)
                        fut.add_done_callback(lambda f, task=task, attempt=attempt: self._finished(task, attempt, f))
                elif cmd == "ACK":
                    for task in body.get("tasks", []):
                        if task in unacked:
                            del unacked[task]
                            held.pop(task, None)
                elif cmd == "REVOKE":
                    # Reserved attempts asked back: those no runner has taken are removed and never run.
                    released = []
                    for t in body.get("tasks", []):
                        task, attempt = t.get("task"), t.get("attempt")
                        entry = futures.get(task)
                        if entry and entry[0] == attempt and held.get(task) == attempt and entry[1].cancel():
                            del futures[task]
                            del held[task]
                            released.append({"task": task, "attempt": attempt})
                    send("RELEASED", {"tasks": released})
                elif cmd == "ERROR":
                    if body.get("code") == "not_allowed" and registered:
                        hello()  # the master does not know us (restarted, or presumed us dead)
                # HEARTBEAT: counted above as hearing from the master; anything else is ignored.
