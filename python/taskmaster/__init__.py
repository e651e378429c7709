"""taskmaster: a client and a worker for a taskmaster master, in Python (docs/PYTHON.md).

    import taskmaster
    w = taskmaster.Worker("tcp://master:5555", key_file=None, threads=4, queues=["default"])
    @w.function
    def shout(s): return s.upper() + "!"
    w.run()

    c = taskmaster.Client("tcp://master:5555", key_file=None)
    c.map("shout", ["a", "b"], queue="default")   # ["A!", "B!"]

It speaks TASKMASTER/1 (docs/PROTOCOL.md) over ZeroMQ with CURVE, on pyzmq alone."""

from .client import Client, Job, Outcome
from .errors import AuthFailed, Error, KeyReused, TaskFailed, Unreachable, UsageError
from .keys import default_key_path, derive_keys, derive_keys_z85, find_key, load_key_file
from .worker import Worker

__version__ = "0.1"
__all__ = ["Client", "Job", "Outcome", "Worker", "Error", "TaskFailed", "UsageError", "Unreachable",
           "AuthFailed", "KeyReused", "find_key", "load_key_file", "default_key_path", "derive_keys", "derive_keys_z85"]
