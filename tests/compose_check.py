#!/usr/bin/env python3
"""Structural check of compose.yaml (there is no container engine in CI to run it).

Checks that the services are there, that every command is a real taskmaster subcommand with options
the binary accepts (asked with --help), that peers connect to the master's service name and port,
and that every taskmaster process gets the shared key. Usage: compose_check.py COMPOSE TASKMASTER
"""
import shlex
import subprocess
import sys

import yaml


def fail(msg):
    print(f"compose_check: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    compose_path, taskmaster = sys.argv[1], sys.argv[2]
    doc = yaml.safe_load(open(compose_path, encoding="utf-8"))
    services = doc.get("services") or fail("no services")
    for name in ("keygen", "master", "worker", "submit"):
        if name not in services:
            fail(f"service {name} is missing")

    def argv_of(svc):
        s = services[svc]
        if "command" in s:
            return list(s["command"])
        entry = s["entrypoint"]
        if entry[:2] == ["sh", "-c"]:
            # the taskmaster part of a shell pipeline: from "taskmaster" to the end or a shell operator
            words = shlex.split(entry[2])
            out = []
            for w in words[words.index("taskmaster") + 1:]:
                if w in ("|", "||", "&&", ";"):
                    break
                out.append(w)
            return out
        return entry[1:]

    def check_options(svc, argv):
        sub = argv[0]
        help_text = subprocess.run([taskmaster, sub, "--help"], capture_output=True, text=True).stdout
        if not help_text:
            fail(f"{svc}: '{sub}' is not a taskmaster subcommand")
        for word in argv[1:]:
            if word.startswith("--") and word not in help_text:
                fail(f"{svc}: taskmaster {sub} has no option {word}")
        return sub

    expected = {"keygen": "keygen", "master": "master", "worker": "worker", "submit": "submit"}
    for svc, sub in expected.items():
        argv = argv_of(svc)
        if check_options(svc, argv) != sub:
            fail(f"{svc}: runs taskmaster {argv[0]}, expected {sub}")

    master = argv_of("master")
    bind = master[master.index("--bind") + 1]
    port = bind.rsplit(":", 1)[1]
    for svc in ("worker", "submit"):
        argv = argv_of(svc)
        if argv[argv.index("--connect") + 1] != f"tcp://master:{port}":
            fail(f"{svc} does not connect to tcp://master:{port}")
    for svc in ("master", "worker", "submit"):
        s = services[svc]
        if s.get("environment", {}).get("TASKMASTER_KEY_FILE") != "/key/key":
            fail(f"{svc} gets no TASKMASTER_KEY_FILE=/key/key")
        if not any(str(v).startswith("key:/key") for v in s.get("volumes", [])):
            fail(f"{svc} does not mount the key volume")
        if "--insecure" in argv_of(svc):
            fail(f"{svc} runs --insecure")
    if "keygen" not in str(services["master"].get("depends_on")):
        fail("the master does not wait for the key")
    if services["worker"].get("deploy", {}).get("replicas", 1) < 2:
        fail("fewer than 2 workers")
    print("compose_check: compose.yaml is consistent with this taskmaster")


main()
