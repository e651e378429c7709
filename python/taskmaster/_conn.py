"""What the client and the worker share: endpoints, the DEALER socket of PROTOCOL.md §2.1 and §9.4,
framing and JSON (§3, §4), and telling a wrong key from an absent master (§9.5)."""

import json
import os
import re
import socket
import sys
import time

import zmq
from zmq.utils.monitor import parse_monitor_message

from . import keys
from .errors import AuthFailed, UsageError

_DEBUG = bool(os.environ.get("TASKMASTER_PY_DEBUG"))
SIGNATURE = b"TASKMASTER/1"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_VALUE_BYTES = 1024 * 1024
MAX_ERROR_BYTES = 65536
MAX_VALUE_DEPTH = 60
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_DISCONNECTED)


def check_name(what, name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(f"{what} must be 1 to 128 characters of A-Z a-z 0-9 _ . : -, not {name!r}")
    return name


def normalize_endpoint(endpoint):
    """tcp://HOST:PORT, HOST:PORT (as tcp://), tcp://[IPV6]:PORT or ipc://PATH; else UsageError."""
    if not isinstance(endpoint, str) or not endpoint:
        raise UsageError(f"endpoint must be HOST:PORT, tcp://HOST:PORT or ipc://PATH, not {endpoint!r}")
    if endpoint.startswith("ipc://") and len(endpoint) > 6:
        return endpoint
    rest = endpoint[6:] if endpoint.startswith("tcp://") else endpoint
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})", rest)
    if not m or not 1 <= int(m.group(2)) <= 65535 or "://" in rest:
        raise UsageError(f"endpoint must be HOST:PORT, tcp://HOST:PORT (port 1-65535), tcp://[IPV6]:PORT "
                         f"or ipc://PATH, not {endpoint!r}")
    return "tcp://" + rest


def dumps(value):
    """Compact JSON in UTF-8 (§4.4); ValueError for what JSON cannot carry (NaN, lone surrogates...)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as e:
        raise ValueError(f"not representable as JSON: {e}") from None


def depth(value, limit=MAX_VALUE_DEPTH + 1):
    """Nesting of arrays and objects in `value` (a scalar is 0), counting at most to `limit`."""
    best, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        items = v.values() if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else None
        if items is None:
            continue
        best = max(best, d)
        if best >= limit:
            return best
        stack.extend((x, d + 1) for x in items)
    return best


def check_value(what, value):
    """The compact JSON of an args or result value, or ValueError if it cannot travel (§4.3, §4.4)."""
    data = dumps(value)
    if len(data) > MAX_VALUE_BYTES:
        raise ValueError(f"{what} is {len(data)} bytes as JSON; at most {MAX_VALUE_BYTES}")
    if depth(value) > MAX_VALUE_DEPTH:
        raise ValueError(f"{what} nests deeper than {MAX_VALUE_DEPTH} levels")
    return data


def cut_utf8(text, limit):
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def decode(frames):
    """(command, body) of a message, or None if it is not a valid TASKMASTER/1 message (§3.1). Peers
    drop bad messages without answering (§3.2)."""
    if len(frames) != 3 or frames[0] != SIGNATURE or len(frames[2]) > MAX_MESSAGE_BYTES:
        return None
    try:
        body = json.loads(frames[2].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    return frames[1].decode("ascii", "replace"), body


def security(key_file, insecure):
    """(server_public, client_public, client_secret) in Z85, or None with insecure."""
    if insecure:
        if key_file:
            raise UsageError("key_file and insecure=True exclude each other")
        return None
    sp, _ss, cp, cs = keys.derive_keys_z85(keys.find_key(key_file))
    return sp, cp, cs


class Connection:
    """One DEALER socket to the master with the options of §2.1 and §9.4, and its monitor."""

    def __init__(self, endpoint, key_file=None, insecure=False, context=None):
        self.endpoint = normalize_endpoint(endpoint)
        self.curve = security(key_file, insecure)
        self.context = context or zmq.Context.instance()
        self.socket = self._dealer(self.curve)
        self.monitor = self.socket.get_monitor_socket(_EVENTS)
        self.socket.connect(self.endpoint)
        self.connected = False  # a handshake succeeded and no disconnection followed
        self.ever_connected = False
        self._no_detail_since = None
        self._next_probe = 0.0
        self._probe_hits = 0

    def _dealer(self, curve):
        s = self.context.socket(zmq.DEALER)
        for opt, val in ((zmq.IMMEDIATE, 1), (zmq.HEARTBEAT_IVL, 1000), (zmq.HEARTBEAT_TIMEOUT, 3000),
                         (zmq.HEARTBEAT_TTL, 3000), (zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES + 4096), (zmq.LINGER, 0),
                         (zmq.TCP_KEEPALIVE, 1), (zmq.SNDHWM, 100000), (zmq.RCVHWM, 100000),
                         (zmq.HANDSHAKE_IVL, 10000), (zmq.CONNECT_TIMEOUT, 2000), (zmq.RECONNECT_IVL, 100),
                         (zmq.RECONNECT_IVL_MAX, 2000)):
            s.setsockopt(opt, val)
        if self.endpoint.startswith("tcp://["):
            s.setsockopt(zmq.IPV6, 1)
        if curve:
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = curve
        return s

    def send(self, command, body):
        """Sends one message; False if it could not be sent now (not connected: IMMEDIATE)."""
        data = body if isinstance(body, bytes) else dumps(body)
        try:
            self.socket.send_multipart([SIGNATURE, command.encode("ascii"), data], flags=zmq.DONTWAIT)
            return True
        except zmq.Again:
            return False

    def recv(self):
        """The next valid message (command, body), or None (nothing now, or a bad message dropped)."""
        try:
            frames = self.socket.recv_multipart(flags=zmq.DONTWAIT)
        except zmq.Again:
            return None
        return decode(frames)

    def events(self):
        """Reads the monitor: returns 'connected' when a handshake succeeded, raises AuthFailed on a
        definite authentication failure (§9.5), else None."""
        what = None
        while True:
            try:
                msg = parse_monitor_message(self.monitor.recv_multipart(flags=zmq.DONTWAIT))
            except zmq.Again:
                break
            ev, value = msg["event"], msg["value"]
            if _DEBUG:
                print(f"taskmaster: monitor event {ev:#x} value {value:#x}", file=sys.stderr)
            if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected = self.ever_connected = True
                self._no_detail_since, self._probe_hits = None, 0
                what = "connected"
            elif ev == zmq.EVENT_DISCONNECTED:
                self.connected = False
            elif ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise AuthFailed(self._auth_message(f"it refused this key (status {value})"))
            elif ev == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                    raise AuthFailed(self._auth_message(
                        "it requires a key, and this side has none (--insecure)" if self.curve is None else
                        "it runs without a key (started with --insecure), and this side uses one"))
                if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
                    raise AuthFailed(self._auth_message(_DIFFERENT_KEY))
                if self._no_detail_since is None:
                    self._no_detail_since = time.monotonic()  # another failure: as without detail
            elif ev == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                if self._no_detail_since is None:
                    self._no_detail_since = time.monotonic()
        if self._no_detail_since is not None and time.monotonic() >= self._next_probe:
            self._probe()
        return what

    @property
    def probing(self):
        """A probe found a master that did not take our handshake: the verdict is near (§9.5)."""
        return self._probe_hits > 0

    def _auth_message(self, reason):
        return f"authentication failed with the master at {self.endpoint}: {reason}"

    def _probe(self):
        """Our CURVE handshakes fail without detail: is a master there at all (§9.5)? A plain TCP
        connection reads its ZMTP greeting: one announcing CURVE, twice 500 ms apart while our handshakes
        keep failing, means the master does not take our key; one announcing NULL means it runs with
        --insecure. No greeting means no master (restarting, or a proxy whose master is down): keep trying."""
        self._next_probe = time.monotonic() + 0.5
        mechanism = _greeting_mechanism(self.endpoint)
        if self.curve is None:  # we run insecure: a master announcing CURVE will never take us
            if mechanism == b"CURVE":
                raise AuthFailed(self._auth_message("it requires a key, and this side has none (--insecure)"))
            self._no_detail_since = None
            return
        if mechanism == b"NULL":
            raise AuthFailed(self._auth_message(
                "it runs without a key (started with --insecure), and this side uses one"))
        if mechanism != b"CURVE":
            self._probe_hits = 0
            self._no_detail_since = None
            self._next_probe = time.monotonic() + 2.0
            return
        self._probe_hits += 1
        if self._probe_hits >= 2:
            raise AuthFailed(self._auth_message(_DIFFERENT_KEY))
        self._no_detail_since = None  # the next probe needs a fresh failure of ours

    def close(self):
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.socket.close(0)


def _greeting_mechanism(endpoint, timeout=1.0):
    """The security mechanism a ZMTP 3 peer at `endpoint` announces in its greeting (RFC 23), e.g.
    b"CURVE", or None if none answers so within `timeout` seconds."""
    try:
        if endpoint.startswith("ipc://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(endpoint[6:])
        else:
            host, port = endpoint[6:].rsplit(":", 1)
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    with sock:
        try:
            # Our greeting: signature, version 3.0, mechanism CURVE, as-client, filler.
            sock.sendall(b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"CURVE".ljust(20, b"\0") + bytes(32))
            data = b""
            while len(data) < 32 and time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(64)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return None
    if len(data) < 32 or data[0] != 0xFF or data[9] != 0x7F or data[10] < 3:
        return None
    return data[12:32].rstrip(b"\0")


_DIFFERENT_KEY = ("the security handshake failed: the master has a different key (wrong key?), "
                  "or runs without one (--insecure)")
