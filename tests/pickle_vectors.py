# Test vectors for the pickle subset (pyman/pickle.h), made by the real CPython: run by
# tests/pickle_test.cpp with /usr/bin/python3.
#   pickle_vectors.py dump   one line per object and protocol 0..5: "HEX JSON", JSON in pickle.h's mapping
#   pickle_vectors.py load   reads HEX lines on stdin, pickle.loads each, prints its JSON (or "ERROR <repr>")
import base64, json, math, pickle, queue, sys
from multiprocessing.managers import Token


def tj(o):
    """A Python value in the JSON mapping of pickle.h / docs/PYTHON.md."""
    if o is None or isinstance(o, bool):
        return o
    if isinstance(o, int):
        return o if -2**63 <= o < 2**63 else {"$int": str(o)}
    if isinstance(o, float):
        if math.isnan(o):
            return {"$float": "nan"}
        if math.isinf(o):
            return {"$float": "inf" if o > 0 else "-inf"}
        return o
    if isinstance(o, str):
        return o
    if isinstance(o, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(bytes(o)).decode()}
    if isinstance(o, tuple):
        return {"$tuple": [tj(x) for x in o]}
    if isinstance(o, list):
        return [tj(x) for x in o]
    if isinstance(o, dict):
        if all(isinstance(k, str) for k in o) and not (len(o) == 1 and next(iter(o)).startswith("$")):
            return {k: tj(v) for k, v in o.items()}
        return {"$dict": [[tj(k), tj(v)] for k, v in o.items()]}
    if isinstance(o, type):
        return {"$global": [o.__module__, o.__qualname__]}
    if isinstance(o, Token):
        return {"$object": {"class": ["multiprocessing.managers", "Token"], "args": [], "state": tj(o.__getstate__()), "newobj": True}}
    if isinstance(o, BaseException):
        r = {"class": [type(o).__module__, type(o).__qualname__], "args": [tj(a) for a in o.args]}
        if o.__dict__:
            r["state"] = tj(o.__dict__)
        return {"$object": r}
    raise TypeError(f"no JSON mapping for {o!r}")


def objects():
    shared = [1]
    noted = ValueError("v")
    noted.add_note("n")
    token = Token("Queue", ("127.0.0.1", 5000), "7f3a")
    return [
        None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**31, 2**63 - 1, -2**63,
        2**63, -2**63 - 1, 2**64, 2**200, -(2**200) + 7, 10**100, -128, -129, 128, 127,
        0.0, -0.0, 1.5, 1e300, 5e-324, float("inf"), float("-inf"), float("nan"), 1e16, 0.1, -2.5e-7,
        "", "a", "é", "€", "😀", "a\\b\nc\r\t", "quote'\"", "x" * 300, "\x00\x7f\x80\xff",
        b"", b"ab", bytes(range(256)), bytearray(b"xy"), bytearray(), b"\\u1234\n",
        (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, [2, [3, ()]]], list(range(1500)),
        {}, {"a": 1}, {"b": 1, "a": 2}, {1: "x", (1, 2): "t", None: 0, b"k": 1, 2.5: "f", -7: [], ("a", (None,)): {}},
        {"$only": 1}, {"$a": 1, "b": 2}, {"k": {"$tuple": [1]}},
        (shared, shared, {"s": shared}),
        ("#RETURN", None), ("#RETURN", ("7f3a", ("put", "get", "qsize", "empty"))), ("#RETURN", 3),
        ("#ERROR", queue.Empty()), ("#ERROR", queue.Full()), ("#ERROR", KeyError("x")), ("#ERROR", KeyError("x", 2)),
        ("#ERROR", AttributeError("method 'foo' of 'Queue' object is not in exposed=('put',)")),
        ("#TRACEBACK", "Traceback (most recent call last):\n  ...\nValueError: boom\n"),
        (None, "create", ("get_task_queue",), {}), ("7f3a", "get", (), {"timeout": 5}), ("7f3a", "get", (True, 0.5), {}),
        ("7f3a", "put", (42,), {}), ("7f3a", "put", ("result: 7 * 7 = 49",), {}), (None, "dummy", (), {}),
        (None, "incref", ("7f3a",), {}), (None, "accept_connection", ("name",), {}),
        token, ("#PROXY", (["put", "get"], token)), noted, queue.Empty, KeyError, Exception("e", 1.5, None),
    ]


def main():
    if sys.argv[1] == "dump":
        for o in objects():
            for p in range(6):
                print(pickle.dumps(o, protocol=p).hex(), json.dumps(tj(o)))
    else:
        for line in sys.stdin:
            try:
                print(json.dumps(tj(pickle.loads(bytes.fromhex(line.strip())))))
            except Exception as e:
                print("ERROR", repr(e))


main()
