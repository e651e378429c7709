#!/usr/bin/env python3
"""Counts what happened to the tasks of jobs, in the style of Jepsen's total-queue checker.

  check_outcomes.py --input TASKS.txt [--what NAME] OUTCOMES.jsonl...

TASKS.txt has the args of every task submitted, one JSON value per line (as given to
`submit --each`). OUTCOMES are JSON lines of `submit --wait --json` or `wait --json`. Every task
must have exactly one outcome, done, with its own args as result (sleep and echo return their args):
  lost        a submitted task with no outcome
  duplicated  a task with more than one outcome line (by task id, or two tasks with the same args)
  unexpected  an outcome whose args were never submitted
  wrong       an outcome that is not done, or whose result differs from its args
Prints the counts (and how many outcomes said "timed out"); exits 1 unless all four are 0.
"""
import argparse
import collections
import json
import sys


def key(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def count(submitted, outcomes):
    """submitted: args values; outcomes: parsed outcome objects. Returns the counts as a dict."""
    wanted = collections.Counter(key(a) for a in submitted)
    seen = collections.Counter()
    per_task = collections.Counter()
    c = collections.Counter(submitted=len(submitted), outcomes=len(outcomes))
    for o in outcomes:
        per_task[(o.get("job"), o["task"])] += 1
        k = key(o["args"])
        if k not in wanted:
            c["unexpected"] += 1
            continue
        seen[k] += 1
        if o["status"] != "done" or key(o.get("result")) != k:
            c["wrong"] += 1
            c["status_" + o["status"]] += 1
        if "timed out" in str(o.get("error", "")):
            c["timed_out"] += 1
        if o.get("attempts", 1) > 1:
            c["retried"] += 1
    for k, n in wanted.items():
        got = seen[k]
        if got < n:
            c["lost"] += n - got
        elif got > n:
            c["duplicated"] += got - n
    c["duplicated"] += sum(n - 1 for n in per_task.values() if n > 1)
    for name in ("lost", "duplicated", "unexpected", "wrong", "timed_out", "retried"):
        c[name] += 0
    return c


def ok(c):
    return c["lost"] == 0 and c["duplicated"] == 0 and c["unexpected"] == 0 and c["wrong"] == 0


def summary(c):
    return ", ".join(f"{k} {c[k]}" for k in ("submitted", "outcomes", "lost", "duplicated", "unexpected", "wrong",
                                             "timed_out", "retried"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--what", default="outcomes")
    p.add_argument("--require-retried", action="store_true", help="fail unless some task ran more than once")
    p.add_argument("outcomes", nargs="+")
    a = p.parse_args()
    submitted = [json.loads(line) for line in open(a.input) if line.strip()]
    outcomes = []
    for f in a.outcomes:
        outcomes += [json.loads(line) for line in open(f) if line.strip()]
    c = count(submitted, outcomes)
    print(f"{a.what}: {summary(c)}")
    if a.require_retried and c["retried"] == 0:
        print(f"{a.what}: no task was run again, although a worker holding tasks was cut off")
        return 1
    return 0 if ok(c) else 1


if __name__ == "__main__":
    sys.exit(main())
