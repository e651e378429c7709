#!/usr/bin/env python3
"""Checks of the deployment files, which CI cannot run (no container engine, no systemd as PID 1).

  deploy_check.py TASKMASTER compose    COMPOSE_FILE
  deploy_check.py TASKMASTER dockerfile DOCKERFILE
  deploy_check.py TASKMASTER systemd    UNIT_FILE...
  deploy_check.py TASKMASTER self-test  SOURCE_DIR     (broken copies of the files must fail the checks)

Every taskmaster command line found (compose command, entrypoint and healthcheck; Dockerfile CMD,
ENTRYPOINT, RUN and HEALTHCHECK; systemd Exec*=) is parsed by the real binary with its hidden
--check-args flag: every option and value checked as in a real start, nothing started. Then the
structure: compose's master keeps its data dir in a named volume and has a healthcheck running
taskmaster health; the key is a secret from a file, never in the YAML; workers can scale (no
container_name, no host ports) and wait for a healthy master; everything referenced exists. The
Dockerfile builds on Debian 12 in stages and runs as a non-root user; the units run as a dedicated
user, restart, stop with SIGTERM and give workers time to drain.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import yaml


class CheckFailed(Exception):
    pass


def fail(msg):
    raise CheckFailed(msg)


# --- taskmaster command lines -----------------------------------------------------------------

SHELL_OPERATORS = {"|", "||", "&&", ";", "&", "(", ")", "!"}


def is_taskmaster(word):
    return word == "taskmaster" or word.endswith("/taskmaster")


def taskmaster_in_shell(script):
    """The argument vectors of every taskmaster command in a shell script (a word in command
    position: first, or after an operator, past VAR=value assignments and `exec`)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    found, i, command_position = [], 0, True
    while i < len(words):
        w = words[i]
        if w in SHELL_OPERATORS or set(w) <= set("|&;()"):
            command_position = True
        elif command_position and (re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w) or w == "exec"):
            pass
        elif command_position and is_taskmaster(w):
            argv = []
            i += 1
            while i < len(words) and not (words[i] in SHELL_OPERATORS or set(words[i]) <= set("|&;()")):
                argv.append(words[i])
                i += 1
            found.append(argv)
            continue
        else:
            command_position = False
        i += 1
    return found


def check_args(taskmaster, where, argv, env=None):
    """Parses `taskmaster ARGV` with --check-args; fails with the binary's own message."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}
    clean.update({k: v for k, v in (env or {}).items() if k.startswith("TASKMASTER_")})
    r = subprocess.run([taskmaster, "--check-args", *argv], capture_output=True, text=True, env=clean, timeout=30)
    if r.returncode != 0:
        fail(f"{where}: 'taskmaster {shlex.join(argv)}' does not parse (exit {r.returncode}): {r.stderr.strip()}")


def option(argv, name):
    """The value of `--name VALUE` or `--name=VALUE` in argv, or None."""
    for i, w in enumerate(argv):
        if w == name and i + 1 < len(argv):
            return argv[i + 1]
        if w.startswith(name + "="):
            return w.split("=", 1)[1]
    return None


def port_of(endpoint):
    return endpoint.rsplit(":", 1)[1]


def seconds(text):
    """A compose or systemd duration ("6m", "1m30s", "330s", "5min", "300") in seconds."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    total, rest = 0.0, text.replace(" ", "")
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)([a-z]+)", rest):
        if unit not in units:
            fail(f"unknown duration unit in {text!r}")
        total += float(number) * units[unit]
    if not re.fullmatch(r"(\d+(\.\d+)?[a-z]+)+", rest):
        fail(f"cannot read the duration {text!r}")
    return total


# --- Dockerfile -------------------------------------------------------------------------------

def dockerfile_instructions(path):
    """(stage index, INSTRUCTION, arguments) for each instruction, continuation lines joined."""
    out, stage, pending = [], -1, ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, args = line.strip().partition(" ")
        word = word.upper()
        if word == "FROM":
            stage += 1
        out.append((stage, word, args.strip()))
    return out


def exec_or_shell(args):
    """A Dockerfile CMD/ENTRYPOINT/RUN argument: (exec-form list, None) or (None, shell string)."""
    if args.startswith("["):
        try:
            return json.loads(args), None
        except ValueError:
            fail(f"not a JSON array: {args}")
    return None, args


def final_entrypoint(path):
    entry = None
    instructions = dockerfile_instructions(path)
    last = max(s for s, _, _ in instructions)
    for stage, word, args in instructions:
        if stage == last and word == "ENTRYPOINT":
            entry = exec_or_shell(args)[0]
    return entry


def check_dockerfile(taskmaster, path):
    instructions = dockerfile_instructions(path)
    stages = [args for _, word, args in instructions if word == "FROM"]
    if len(stages) < 2:
        fail("Dockerfile: not multi-stage (a build stage and a runtime stage)")
    for s in stages:
        if not re.match(r"debian:12(-slim)?(\s|$)", s):
            fail(f"Dockerfile: stage 'FROM {s}' is not Debian 12")
    last = len(stages) - 1
    user = None
    entry = final_entrypoint(path)
    if entry is None or not is_taskmaster(entry[0]):
        fail("Dockerfile: the final stage's ENTRYPOINT is not [\"taskmaster\"] (compose.yaml relies on it)")
    commands = 0
    for stage, word, args in instructions:
        if word == "RUN":
            if stage < last and re.search(r"\b(clang|tcpdump|strace|gdb|valgrind)\b", args):
                fail(f"Dockerfile: the build stage installs test tools: RUN {args}")
            if "setup.sh" in args and "--build" not in args:
                fail("Dockerfile: scripts/setup.sh without --build installs the test tools too")
            for argv in taskmaster_in_shell(args):
                check_args(taskmaster, "Dockerfile RUN", argv)
                commands += 1
        if stage != last:
            continue
        if word == "USER":
            user = args.split(":")[0]
        elif word == "CMD":
            argv, _ = exec_or_shell(args)
            if argv is None:
                fail("Dockerfile: CMD in shell form would not reach taskmaster's ENTRYPOINT as arguments")
            check_args(taskmaster, "Dockerfile CMD", entry[1:] + argv)
            commands += 1
        elif word == "HEALTHCHECK" and args.upper() != "NONE":
            cmd = re.sub(r"^(--\S+\s+)*CMD\s+", "", args)
            argv, shell = exec_or_shell(cmd)
            for a in ([argv[1:]] if argv and is_taskmaster(argv[0]) else taskmaster_in_shell(shell or "")):
                check_args(taskmaster, "Dockerfile HEALTHCHECK", a)
                commands += 1
    if user in (None, "", "0", "root"):
        fail("Dockerfile: the runtime stage runs as root (no USER, or USER root)")
    if commands == 0:
        fail("Dockerfile: no taskmaster command line found to check")
    return commands


# --- compose.yaml -----------------------------------------------------------------------------

def compose_argvs(svc_name, svc, image_entrypoint):
    """{where: argv} of every taskmaster command line of a service."""
    out = {}
    entry = svc.get("entrypoint")
    command = svc.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    if isinstance(entry, str):
        entry = shlex.split(entry)
    if entry is None:
        entry = image_entrypoint or []
    if entry[:2] in (["sh", "-c"], ["/bin/sh", "-c"], ["bash", "-c"]):
        for n, argv in enumerate(taskmaster_in_shell(entry[2])):
            out[f"{svc_name} entrypoint #{n + 1}"] = argv
    elif entry and is_taskmaster(entry[0]):
        out[f"{svc_name} command"] = entry[1:] + list(command or [])
    test = (svc.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test and test[0] == "CMD":
        if is_taskmaster(test[1]):
            out[f"{svc_name} healthcheck"] = test[2:]
    elif test:
        script = test[1] if isinstance(test, list) else test
        for argv in taskmaster_in_shell(script):
            out[f"{svc_name} healthcheck"] = argv
    return out


def named_volume_mounts(svc):
    """{container path: volume name} for the named volumes (not bind mounts) a service mounts."""
    mounts = {}
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            if v.get("type", "volume") == "volume" and v.get("source"):
                mounts[v["target"]] = v["source"]
            continue
        parts = str(v).split(":")
        if len(parts) >= 2 and not parts[0].startswith((".", "/", "~", "$")):
            mounts[parts[1]] = parts[0]
    return mounts


def check_compose(taskmaster, path):
    text = open(path, encoding="utf-8").read()
    doc = yaml.safe_load(text)
    services = doc.get("services") or fail("compose: no services")
    for name in ("keygen", "master", "worker", "submit"):
        if name not in services:
            fail(f"compose: service {name} is missing")
    here = os.path.dirname(os.path.abspath(path))
    dockerfile = os.path.join(here, "Dockerfile")
    image_entry = final_entrypoint(dockerfile) if os.path.exists(dockerfile) else ["taskmaster"]

    # Every taskmaster command line parses, with the service's environment.
    argvs = {}
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env if "=" in e)
        for where, argv in compose_argvs(name, svc, image_entry).items():
            if "--insecure" in argv:
                fail(f"compose: {where} runs --insecure")
            check_args(taskmaster, f"compose {where}", argv, {k: str(v) for k, v in env.items()})
            argvs[where] = argv
    expected = {"keygen entrypoint #1": "keygen", "master command": "master", "master healthcheck": "health",
                "worker command": "worker", "submit entrypoint #1": "submit"}
    for where, sub in expected.items():
        if where not in argvs:
            fail(f"compose: no taskmaster command line for {where}")
        if argvs[where][:1] != [sub]:
            fail(f"compose: {where} runs taskmaster {argvs[where][:1]}, expected {sub}")

    # References: depends_on, volumes and secrets name things that exist.
    volumes = doc.get("volumes") or {}
    secrets = doc.get("secrets") or {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                fail(f"compose: {name} depends on a service {dep} that does not exist")
        for vol in named_volume_mounts(svc).values():
            if vol not in volumes:
                fail(f"compose: {name} mounts a volume {vol} not declared under volumes:")
        for s in svc.get("secrets") or []:
            source = s["source"] if isinstance(s, dict) else s
            if source not in secrets:
                fail(f"compose: {name} uses a secret {source} not declared under secrets:")

    # The master: its data dir in a named volume, a healthcheck with taskmaster health on its port.
    master = services["master"]
    data_dir = option(argvs["master command"], "--data-dir")
    if not data_dir or "--in-memory" in argvs["master command"]:
        fail("compose: the master has no --data-dir (its journal would not outlive the container)")
    if data_dir not in named_volume_mounts(master):
        fail(f"compose: the master's data dir {data_dir} is not a named volume")
    port = port_of(option(argvs["master command"], "--bind") or "tcp://0.0.0.0:5555")
    health = argvs["master healthcheck"]
    if port_of(option(health, "--connect") or "tcp://127.0.0.1:5555") != port:
        fail(f"compose: the master's healthcheck does not ask port {port}")
    hc = master["healthcheck"]
    probe = float(option(health, "--timeout") or option(health, "--connect-timeout") or 2)
    if "timeout" in hc and seconds(hc["timeout"]) <= probe:
        fail("compose: the healthcheck's timeout is not longer than taskmaster health's own --timeout")

    # The key: a secret from a file, the same for every taskmaster process, never in the YAML.
    key_secrets = [n for n, s in secrets.items() if isinstance(s, dict) and "file" in s]
    if not key_secrets:
        fail("compose: no secret from a file for the key")
    key_file = secrets[key_secrets[0]]["file"]
    if re.search(r"\b[0-9a-fA-F]{64}\b", text):
        fail("compose: something that looks like a key (64 hex digits) is in the YAML")
    for name in ("master", "worker", "submit"):
        svc = services[name]
        env = svc.get("environment") or {}
        if "TASKMASTER_KEY" in env:
            fail(f"compose: {name} has the key itself in TASKMASTER_KEY")
        mounted = {}
        for s in svc.get("secrets") or []:
            source = s["source"] if isinstance(s, dict) else s
            target = s.get("target", source) if isinstance(s, dict) else s
            mounted[source] = target if target.startswith("/") else "/run/secrets/" + target
        if key_secrets[0] not in mounted:
            fail(f"compose: {name} does not get the key secret {key_secrets[0]}")
        if env.get("TASKMASTER_KEY_FILE") != mounted[key_secrets[0]]:
            fail(f"compose: {name}'s TASKMASTER_KEY_FILE is not {mounted[key_secrets[0]]}")
    ignore = os.path.join(here, ".dockerignore")
    if not os.path.exists(ignore) or os.path.basename(key_file) not in open(ignore, encoding="utf-8").read().split():
        fail(f"compose: .dockerignore does not keep {key_file} out of the image's build context")

    # Workers scale, wait for a healthy master, connect to it by its service name, and drain.
    worker = services["worker"]
    for bad in ("container_name", "ports", "hostname"):
        if bad in worker:
            fail(f"compose: the worker service has {bad}: it could not scale (--scale worker=N)")
    if (worker.get("deploy") or {}).get("replicas", 1) < 2:
        fail("compose: fewer than 2 workers")
    if ((worker.get("depends_on") or {}).get("master") or {}).get("condition") != "service_healthy":
        fail("compose: the workers do not wait for a healthy master")
    for where in ("worker command", "submit entrypoint #1"):
        if option(argvs[where], "--connect") != f"tcp://master:{port}":
            fail(f"compose: {where} does not connect to tcp://master:{port}")
    if worker.get("stop_signal", "SIGTERM") != "SIGTERM" or seconds(worker.get("stop_grace_period", "10s")) < 300:
        fail("compose: workers cannot drain (stop_signal SIGTERM, stop_grace_period at least a task's 300 s timeout)")
    return len(argvs)


# --- systemd units ----------------------------------------------------------------------------

SPECIFIERS = {"%i": "default", "%I": "default", "%H": "host.example", "%l": "host", "%n": "unit.service",
              "%N": "unit", "%p": "unit", "%S": "/var/lib", "%t": "/run", "%d": "/run/credentials/unit.service", "%%": "%"}


def read_unit(path):
    """{(section, key): [values]}: systemd allows a key more than once (Environment=, Exec*=)."""
    values = {}
    section = None
    pending = ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if not pending and (not line.strip() or line.lstrip()[:1] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("["):
            section = line.strip("[] ")
            continue
        key, _, value = line.partition("=")
        values.setdefault((section, key.strip()), []).append(value.strip())
    return values


def unit_environment(unit):
    env = {}
    for value in unit.get(("Service", "Environment"), []):
        for assignment in shlex.split(value):
            k, _, v = assignment.partition("=")
            env[k] = v
    return env


def unit_argv(value):
    for s, real in SPECIFIERS.items():
        value = value.replace(s, real)
    value = value.lstrip("-@+!:")
    return shlex.split(value)


def check_units(taskmaster, paths):
    checked = 0
    for path in paths:
        name = os.path.basename(path)
        unit = read_unit(path)
        get = lambda key: (unit.get(("Service", key)) or [None])[-1]
        if get("User") in (None, "", "root", "0") and get("DynamicUser") != "yes":
            fail(f"{name}: no dedicated User=")
        if get("Restart") != "always":
            fail(f"{name}: Restart= is not always")
        if get("KillSignal") != "SIGTERM":
            fail(f"{name}: KillSignal= is not SIGTERM")
        if not get("TimeoutStopSec"):
            fail(f"{name}: no TimeoutStopSec=")
        env = unit_environment(unit)
        if "TASKMASTER_KEY" in env:
            fail(f"{name}: the key itself is in the unit (TASKMASTER_KEY)")
        exec_lines = [(k, v) for (section, k), vs in unit.items() if section == "Service" and k.startswith("Exec") for v in vs]
        starts = []
        for key, value in exec_lines:
            argv = unit_argv(value)
            if not argv or not is_taskmaster(argv[0]):
                continue
            if "--insecure" in argv:
                fail(f"{name}: {key} runs --insecure")
            if not (env.get("TASKMASTER_KEY_FILE") or option(argv, "--key-file") or "LoadCredential" in str(unit)):
                fail(f"{name}: {key} gets no key (TASKMASTER_KEY_FILE or --key-file)")
            check_args(taskmaster, f"{name} {key}", argv[1:], env)
            checked += 1
            if key == "ExecStart":
                starts.append(argv[1:])
        if len(starts) != 1:
            fail(f"{name}: expected one ExecStart= running taskmaster, found {len(starts)}")
        sub = starts[0][0]
        if sub == "master":
            state = get("StateDirectory")
            if not state or option(starts[0], "--data-dir") != "/var/lib/" + state.split()[0]:
                fail(f"{name}: the master's --data-dir is not its StateDirectory= (/var/lib/{state})")
        elif sub == "worker":
            if seconds(get("TimeoutStopSec")) < 300:
                fail(f"{name}: TimeoutStopSec= is shorter than a task's default 300 s timeout: draining would be cut short")
            if get("KillMode") != "mixed":
                fail(f"{name}: KillMode= is not mixed: systemd would SIGTERM the processes of exec tasks too")
        else:
            fail(f"{name}: runs taskmaster {sub}, expected master or worker")
    verify_units(taskmaster, paths)
    return checked


def verify_units(taskmaster, paths):
    """systemd-analyze verify, where there is one, on copies that run the binary under test."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("deploy_check: no systemd-analyze, unit syntax not verified")
        return
    with tempfile.TemporaryDirectory() as tmp:
        names = []
        for path in paths:
            text = open(path, encoding="utf-8").read()
            text = re.sub(r"(?m)^(Exec\w+=[-@+!:]*)\S*/taskmaster\b", r"\g<1>" + os.path.abspath(taskmaster), text)
            name = os.path.basename(path)
            open(os.path.join(tmp, name), "w", encoding="utf-8").write(text)
            names.append(name.replace("@.", "@default."))
        r = subprocess.run([analyze, "verify", "--man=no", *names], cwd=tmp, capture_output=True, text=True, timeout=60)
        problems = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or problems:
            fail(f"systemd-analyze verify: {problems or 'exit ' + str(r.returncode)}")


# --- self-test: broken copies must fail -------------------------------------------------------

def self_test(taskmaster, source):
    def broken(kind, rel, old, new, extra=()):
        with tempfile.TemporaryDirectory() as tmp:
            for f in (rel, *extra):
                os.makedirs(os.path.dirname(os.path.join(tmp, f)), exist_ok=True)
                shutil.copy(os.path.join(source, f), os.path.join(tmp, f))
            path = os.path.join(tmp, rel)
            text = open(path, encoding="utf-8").read()
            if old not in text:
                raise SystemExit(f"deploy_check self-test: {rel} no longer contains {old!r}; update the self-test")
            open(path, "w", encoding="utf-8").write(text.replace(old, new, 1))
            try:
                run(taskmaster, kind, [path])
            except CheckFailed as e:
                return str(e)
            raise SystemExit(f"deploy_check self-test: {rel} with {old!r} -> {new!r} passed the checks")

    compose_env = ("Dockerfile", ".dockerignore")
    cases = [
        ("compose", "compose.yaml", '"--threads", "2"', '"--threads", "0"', compose_env),
        ("compose", "compose.yaml", '"--data-dir", "/data"]', '"--data-dir", "/data", "--bogus"]', compose_env),
        ("compose", "compose.yaml", '"health", "--connect"', '"health", "--retry-timeout", "1", "--connect"', compose_env),
        ("compose", "compose.yaml", "--each --wait", "--each --wiat", compose_env),
        ("compose", "compose.yaml", "      - journal:/data", "      - ./journal:/data", compose_env),
        ("compose", "compose.yaml", "    healthcheck:", "    x-healthcheck:", compose_env),
        ("compose", "compose.yaml", "    init: true", "    container_name: worker\n    init: true", compose_env),
        ("compose", "compose.yaml", "TASKMASTER_KEY_FILE: /run/secrets/taskmaster_key",
         "TASKMASTER_KEY: " + "ab" * 32, compose_env),
        ("compose", "compose.yaml", "condition: service_healthy", "condition: service_started", compose_env),
        ("dockerfile", "Dockerfile", 'CMD ["master"', 'CMD ["master", "--bogus"', ()),
        ("dockerfile", "Dockerfile", "USER 10001:10001", "USER root", ()),
        ("dockerfile", "Dockerfile", "RUN bash /src/scripts/setup.sh --build", "RUN bash /src/scripts/setup.sh", ()),
        ("systemd", "deploy/systemd/taskmaster-master.service", "--worker-timeout 3", "--worker-timeout 0", ()),
        ("systemd", "deploy/systemd/taskmaster-master.service", "KillSignal=SIGTERM", "KillSignal=SIGKILL", ()),
        ("systemd", "deploy/systemd/taskmaster-master.service", "StateDirectoryMode=0700", "StateDirectoryMode=07x0", ()),
        ("systemd", "deploy/systemd/taskmaster-worker@.service", "--queue %i", "--queue %i/x", ()),
        ("systemd", "deploy/systemd/taskmaster-worker@.service", "TimeoutStopSec=330s", "TimeoutStopSec=30s", ()),
    ]
    if not shutil.which("systemd-analyze"):
        cases = [c for c in cases if "StateDirectoryMode" not in c[2]]
    for kind, rel, old, new, extra in cases:
        why = broken(kind, rel, old, new, extra)
        print(f"deploy_check self-test: {rel} with {new!r}: fails as it should ({why})")
    print(f"deploy_check self-test: all {len(cases)} broken copies fail the checks")


def run(taskmaster, kind, paths):
    if kind == "compose":
        return check_compose(taskmaster, paths[0])
    if kind == "dockerfile":
        return check_dockerfile(taskmaster, paths[0])
    if kind == "systemd":
        return check_units(taskmaster, paths)
    raise SystemExit(f"usage: {sys.argv[0]} TASKMASTER compose|dockerfile|systemd|self-test FILE...")


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    taskmaster, kind, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    if kind == "self-test":
        self_test(taskmaster, paths[0])
        return
    try:
        n = run(taskmaster, kind, paths)
    except CheckFailed as e:
        print(f"deploy_check: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"deploy_check: {kind}: {', '.join(os.path.basename(p) for p in paths)} consistent; "
          f"{n} taskmaster command lines parse")


main()
