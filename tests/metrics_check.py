#!/usr/bin/env python3
"""Parses a Prometheus text exposition with Prometheus' own Python parser (Debian's
python3-prometheus-client) and checks the conventions docs/HTTP.md promises: every family named
taskmaster_*, counters ending in _total, histograms in _seconds with +Inf buckets equal to their
counts. Prints the samples as JSON lines {"name", "labels", "value"}; exits 1 with one line saying
what is wrong.

    metrics_check.py FILE
"""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and others on bad input
        sys.exit(f"metrics_check: not Prometheus text format: {e}")
    if not families:
        sys.exit("metrics_check: no metric families")
    for f in families:
        if not f.name.startswith("taskmaster_"):
            sys.exit(f"metrics_check: {f.name}: not prefixed taskmaster_")
        if not f.documentation:
            sys.exit(f"metrics_check: {f.name}: no HELP")
        if f.type == "counter" and any(not s.name.endswith(("_total", "_created")) for s in f.samples):
            sys.exit(f"metrics_check: counter {f.name}: a sample not named _total")
        if f.type == "histogram":
            if not f.name.endswith("_seconds"):
                sys.exit(f"metrics_check: histogram {f.name}: not in _seconds")
            counts = {}
            infs = {}
            for s in f.samples:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                if s.name.endswith("_count"):
                    counts[key] = s.value
                if s.name.endswith("_bucket") and s.labels.get("le") == "+Inf":
                    infs[key] = s.value
            if counts != infs:
                sys.exit(f"metrics_check: histogram {f.name}: +Inf buckets {infs} differ from counts {counts}")
        for s in f.samples:
            if math.isnan(s.value) or s.value < 0:
                sys.exit(f"metrics_check: {s.name}{s.labels}: value {s.value}")
            print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value}, sort_keys=True))


if __name__ == "__main__":
    main()
