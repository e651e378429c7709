#!/usr/bin/env bash
# Browser test of the dashboard (master/dashboard/index.html, docs/HTTP.md), in a network namespace
# with only loopback, with headless chromium:
#   - real mode (default): a master with --http, one worker serving queue dashq, a job of slow sleeps
#     running on it and a job whose task failed (its error has markup in it);
#   - --mock: tests/browser/mock_api.py instead (1000 workers, 10000 jobs), no taskmaster needed.
# 1. The login URL the master logs is the one `taskmaster dashboard` prints (real mode).
# 2. curl: the API without the token is 401; /login sets tm_token and tm_csrf and answers 303 to /;
#    a POST with the cookie but no X-CSRF-Token (or a foreign Origin) is 403.
# 3. chromium --dump-dom of the login URL: after the redirect the page shows dashq in #queues, the
#    worker's id in #workers, the job's id in #jobs, a chart in #chart, the failure's error as text
#    in #failures (no markup of it parsed), and a live #status-line. With &job=ID: #job-panel shows it.
# 4. chromium --screenshot (1400x1000, more than 10 KB), copied to $TASKMASTER_SCREENSHOT_DIR
#    (default: build/ of this checkout) as dashboard.png (dashboard-mock.png with --mock).
# 5. With the cookie and X-CSRF-Token, cancel and retry answer as documented.
# 6. (--mock) The page once the API is gone (network errors) or refuses the token: it says so and
#    keeps the last data. 7. (--mock) Clicks, through mock_api.py's /_harness page.
# Needs root, iproute2, curl, python3 and /usr/bin/chromium; exits 77 (skipped) otherwise.
# Everything it starts or makes is stopped or removed on exit, on success and on failure.
# Usage: dashboard.sh TASKMASTER_BINARY [--mock]     dashboard.sh --mock
set -euo pipefail
here=$(dirname "$(realpath "$0")")
root=$(realpath "$here/../..")
source "$root/tests/netns/lib.sh"  # skip, fail, wait_until, start_bg, on, netns_cleanup

mock=0 tm=
for a in "$@"; do
  case $a in
    --mock) mock=1 ;;
    -*) echo "usage: $0 TASKMASTER_BINARY [--mock]" >&2; exit 2 ;;
    *) tm=$(realpath "$a") ;;
  esac
done
((mock)) || [[ -n $tm ]] || { echo "usage: $0 TASKMASTER_BINARY [--mock]" >&2; exit 2; }
page=$root/master/dashboard/index.html
chromium=/usr/bin/chromium

[[ $(id -u) == 0 ]] || skip "needs root for network namespaces"
command -v ip >/dev/null || skip "no ip (iproute2)"
command -v curl >/dev/null || skip "no curl"
command -v python3 >/dev/null || skip "no python3"
[[ -x $chromium ]] || skip "no $chromium (Debian package chromium)"

# What lib.sh's netns_init sets up, but one namespace with only loopback, and no bridge.
id=tm$$
work=$(mktemp -d)
declare -gA ip_of=() pid=()
bg_pids=()
made=()
mounts=()
trap netns_cleanup EXIT
trap 'exit 1' INT TERM HUP
ip netns add "${id}d" 2>/dev/null || skip "cannot make network namespaces here"
made+=("${id}d")
ip -n "${id}d" link set lo up 2>/dev/null || skip "cannot enter network namespaces here"

# 0. The page itself: small enough to embed, no raw-string terminator, nothing from elsewhere.
[[ -s $page ]] || fail "no $page"
size=$(stat -c %s "$page")
((size < 40960)) || fail "the page is $size bytes (at most 40 KB)"
! grep -qF ')tmdash"' "$page" || fail "the page contains the raw string's delimiter )tmdash\""
! grep -oE '(https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}[^"'"'"' ]*' "$page" | grep -v '^http://www\.w3\.org/2000/svg$' | grep -q . ||
  fail "the page refers to other sites: $(grep -oE 'https?://[^"'"'"' ]*' "$page" | grep -v w3.org/2000/svg | head -n 3)"

zmq=tcp://127.0.0.1:5555
http=127.0.0.1:8080
base=http://$http

# curl inside the namespace: c ARGS...
c() { on d curl -sS --max-time 10 "$@"; }
# api_py PATH EXPR: evaluates the python expression EXPR with j = the JSON of GET PATH (Bearer token).
api_py() {
  local body
  body=$(c -f -H "Authorization: Bearer $token" "$base$1" 2>/dev/null) || return 1
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); v=eval(sys.argv[2]); print(int(v) if isinstance(v,bool) else v)' "$body" "$2"
}
api_is() { [[ $(api_py "$1" "$2" 2>/dev/null) == 1 ]]; }
code_of() { c -o "$work/body.out" -w '%{http_code}' "$@" || true; }
login_logged() { grep -ohE "http://$http/login\?token=[0-9a-f]{32}" "$work/master.log" "$work/master.out" 2>/dev/null | head -n 1; }
has_login_url() { [[ -n $(login_logged) ]]; }

if ((mock)); then
  token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  start_bg mock d python3 "$here/mock_api.py" --host 127.0.0.1 --port 8080 --workers 1000 --jobs 10000 --token "$token"
  wait_until 20 "the mock's login URL" test -s "$work/mock.out"
  login=$(head -n 1 "$work/mock.out")
  [[ $login == "$base/login?token=$token" ]] || fail "the mock printed '$login'"
  worker=$(api_py '/api/workers?offset=0&limit=50' 'j["workers"][0]["id"]') || fail "no workers from the mock"
  job=$(api_py '/api/jobs?limit=1' 'j["jobs"][0]["id"]') || fail "no jobs from the mock"
  failed_job=$(api_py '/api/jobs?limit=200' 'next((x["id"] for x in j["jobs"] if x["failed"] > 0), "")')
  boom=$(api_py /api/status 'next(f["error"] for f in j["failures"] if "<" in f["error"])') || fail "no failure with markup from the mock"
else
  [[ -x $tm ]] || fail "no binary $tm"
  export TASKMASTER_KEY_FILE=$work/key
  "$tm" keygen --out "$work/key" >/dev/null 2>&1 || fail "keygen"
  start_bg master d "$tm" master --bind "$zmq" --http "$http" --data-dir "$work/data"
  wait_until 20 "the master's endpoint line" test -s "$work/master.out"
  [[ $(head -n 1 "$work/master.out") == "$zmq" ]] || fail "master bound $(head -n 1 "$work/master.out")"
  wait_until 20 "the master's login URL ($base/login?token=...) in its log" has_login_url
  login=$(login_logged)
  token=${login##*token=}
  # 1. taskmaster dashboard prints the same URL.
  on d "$tm" dashboard --connect "$zmq" >"$work/dashboard.out" 2>"$work/dashboard.log" || fail "taskmaster dashboard failed"
  printed=$(grep -oE "http://[^ ]*/login\?token=[0-9a-f]{32}" "$work/dashboard.out" | head -n 1)
  [[ $printed == "$login" ]] || fail "taskmaster dashboard printed '$printed', the master logged '$login'"
  worker=dashw1
  start_bg worker d "$tm" worker --connect "$zmq" --threads 2 --queue dashq --name "$worker"
  wait_until 30 "worker $worker in /api/workers" api_is '/api/workers?offset=0&limit=50' "any(w['id'] == '$worker' for w in j['workers'])"
    # A task that fails at once (no retry), its error with markup in it; then 1000 sleeps of 0.2 s
  # (100 s on 2 threads), still running while the page loads; cancelled at the end.
  boom='<b>boom</b> & <script>document.title="pwned"</script>'
  on d "$tm" submit fail "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$boom")" --queue dashq --max-attempts 1 \
    --connect "$zmq" >"$work/failjob.out" 2>"$work/failjob.log" || fail "submit of the failing job"
  failed_job=$(tr -dc 0-9 <"$work/failjob.out")
  sleep_input "$work/sleeps.in" 1000 0.2
  on d "$tm" submit sleep --each --queue dashq --connect "$zmq" <"$work/sleeps.in" >"$work/job.out" 2>"$work/job.log" ||
    fail "submit of the sleep job"
  job=$(tr -dc 0-9 <"$work/job.out")
  [[ -n $failed_job && -n $job ]] || fail "submit printed no job id ('$(cat "$work/failjob.out")', '$(cat "$work/job.out")')"
  wait_until 30 "job $failed_job's failure in /api/status" api_is /api/status "any(f['job'] == $failed_job for f in j['failures'])"
  wait_until 30 "job $job running" api_is "/api/jobs/$job" "j['state'] == 'running' and j['counts']['running'] > 0"
fi
echo "dashboard: $( ((mock)) && echo mock || echo master) at $base; worker $worker, job $job, failed job ${failed_job:-none}"

# 2. Access: no token, login, CSRF.
[[ $(code_of "$base/api/status") == 401 ]] || fail "/api/status without the token: $(cat "$work/body.out")"
python3 -c 'import json,sys; assert isinstance(json.load(open(sys.argv[1]))["error"], str)' "$work/body.out" ||
  fail "the 401 is not {\"error\": ...}: $(cat "$work/body.out")"
[[ $(code_of -H "Authorization: Bearer $token" "$base/api/status") == 200 ]] || fail "/api/status with the token: $(cat "$work/body.out")"
[[ $(code_of "$base/api/status" -H "Authorization: Bearer 0123456789abcdef0123456789abcdef") == 401 ]] || fail "a wrong token is not 401"
[[ $(code_of "$base/metrics") == 401 ]] || fail "/metrics without the token: $(head -c 300 "$work/body.out")"
[[ $(code_of -H "Authorization: Bearer $token" "$base/metrics") == 200 ]] || fail "/metrics with the token: $(head -c 300 "$work/body.out")"
# Without the token / is a short page saying how to log in (200 or 401: HTTP.md names no code).
r=$(code_of "$base/")
[[ $r == 200 || $r == 401 ]] && [[ -s $work/body.out ]] && ! grep -q 'id="queues"' "$work/body.out" ||
  fail "/ without the token: $r, $(head -c 300 "$work/body.out")"
r=$(c -c "$work/cookies" -o /dev/null -w '%{http_code} %{redirect_url}' "$login") || fail "curl $login"
[[ $r == "303 $base/" ]] || fail "/login answered '$r', not '303 $base/'"
csrf=$(awk '$6 == "tm_csrf" { print $7 }' "$work/cookies")
grep -q '^#HttpOnly_127.0.0.1.*tm_token' "$work/cookies" || fail "no HttpOnly tm_token cookie: $(cat "$work/cookies")"
[[ -n $csrf ]] || fail "no tm_csrf cookie: $(cat "$work/cookies")"
[[ $(code_of -b "$work/cookies" "$base/") == 200 ]] && grep -q 'id="queues"' "$work/body.out" || fail "/ with the cookie is not the dashboard"
cmp -s "$work/body.out" "$page" || echo "note: the page served differs from $page (a binary built from other sources?)"
[[ $(code_of -b "$work/cookies" -X POST "$base/api/jobs/$job/cancel") == 403 ]] ||
  fail "cancel with the cookie and no X-CSRF-Token: $(cat "$work/body.out")"
[[ $(code_of -b "$work/cookies" -X POST -H "X-CSRF-Token: x$csrf" "$base/api/jobs/$job/cancel") == 403 ]] ||
  fail "cancel with a wrong X-CSRF-Token: $(cat "$work/body.out")"
[[ $(code_of -b "$work/cookies" -X POST -H "X-CSRF-Token: $csrf" -H "Origin: http://evil.example" "$base/api/jobs/$job/cancel") == 403 ]] ||
  fail "cancel with another Origin: $(cat "$work/body.out")"
api_is "/api/jobs/$job" "j['state'] == 'running'" || fail "job $job is no longer running after refused cancels"

# 3. The page, through the login URL, in chromium (cookies kept in its profile for the session).
browse() {  # browse OUTPUT URL CHROMIUM-OPTIONS...: chromium in the namespace, at most 90 s
  local out=$1 url=$2
  shift 2
  local code=0
  on d env HOME="$work/home" timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$work/chrome" --virtual-time-budget="${budget:-8000}" "$@" "$url" >"$out" 2>>"$work/chromium.log" || code=$?
  ((code != 124)) || fail "chromium on $url did not finish within 60 s (a dialog, such as an alert() run by markup that should have been text, blocks it)"
  ((code == 0)) || fail "chromium on $url: exit $code"
}
mkdir -p "$work/home"
# dom_check DOM-FILE PYTHON-CONDITIONS: with text(ID) (the text inside the element of that id),
# cells(ID) (the texts of its td cells), tags(ID) (the tag names inside it), attr(ID, NAME).
dom_check() {
  python3 - "$@" <<'PY'
import html.parser, os, sys
class P(html.parser.HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.text, self.cells, self.tags, self.attrs = [], {}, {}, {}, {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for i in self.open():
            self.tags[i].append(tag)
        if tag not in self.VOID:
            self.stack.append((tag, a.get("id"), []))
        if a.get("id"):
            self.text.setdefault(a["id"], []); self.cells.setdefault(a["id"], []); self.tags.setdefault(a["id"], [])
            self.attrs[a["id"]] = a
    def open(self):
        return [i for _, i, _ in self.stack if i]
    def handle_endtag(self, tag):
        while self.stack:
            t, i, buf = self.stack.pop()
            if t == "td":
                for j in self.open():
                    self.cells[j].append("".join(buf).strip())
            elif self.stack:
                self.stack[-1][2].extend(buf)
            if t == tag:
                break
    def handle_data(self, d):
        for i in self.open():
            self.text[i].append(d)
        if self.stack:
            self.stack[-1][2].append(d)
p = P()
p.feed(open(sys.argv[1], encoding="utf-8").read())
text = lambda i: "".join(p.text.get(i, []))
cells = lambda i: p.cells.get(i, [])
tags = lambda i: p.tags.get(i, [])
attr = lambda i, n: p.attrs.get(i, {}).get(n)
bad = [c for c in sys.argv[2:] if not eval(c)]
for c in bad:
    print("dom check failed:", c, file=sys.stderr)
if bad:
    for i in ("status-line", "queues", "workers", "jobs", "failures", "job-panel"):
        print("#%s: %s" % (i, text(i)[:300].replace("\n", " ")), file=sys.stderr)
    sys.exit(1)
PY
}
browse "$work/dom.html" "$login" --dump-dom
cp "$work/dom.html" "$work/dom.out"  # kept by TASKMASTER_NETNS_KEEP
export worker job boom mock
dom_check "$work/dom.html" \
  'text("status-line").startswith("live")' \
  '"dashq" in cells("queues")' \
  'os.environ["worker"] in cells("workers")' \
  'os.environ["job"] in cells("jobs")' \
  '"svg" in tags("chart") and "polyline" in tags("chart")' \
  'os.environ["boom"] in text("failures")' \
  'not {"script", "b", "img"} & set(tags("failures"))' \
  'attr("job-panel", "hidden") is not None' \
  '"of 1,000" in text("workers-range") if os.environ["mock"] == "1" else True' \
  2>>"$work/dom.log" || fail "the page after login: $(tail -n 8 "$work/dom.log")"
echo "dashboard: the page shows dashq, worker $worker, job $job, the chart, the failure's markup as text"

browse "$work/dom-job.html" "$login&job=$job" --dump-dom
dom_check "$work/dom-job.html" \
  'attr("job-panel", "hidden") is None' \
  '("Job " + os.environ["job"]) in text("job-panel")' \
  '"dashq" in text("job-panel")' \
  2>>"$work/dom.log" || fail "the job panel of /?job=$job: $(tail -n 8 "$work/dom.log")"
echo "dashboard: /login?...&job=$job opens the job's panel"

# 4. A screenshot.
browse /dev/null "$login&job=$job" --screenshot="$work/dashboard.png" --window-size=1400,1000
shot_size=$(stat -c %s "$work/dashboard.png" 2>/dev/null || echo 0)
((shot_size > 10240)) || fail "the screenshot is $shot_size bytes"
shots=${TASKMASTER_SCREENSHOT_DIR:-$root/build}
mkdir -p "$shots"
suffix=
((mock)) && suffix=-mock
shot=$shots/dashboard$suffix.png
cp "$work/dashboard.png" "$shot"

# 5. The actions, as the page sends them.
post() { c -b "$work/cookies" -X POST -H "X-CSRF-Token: $csrf" -H "Origin: $base" -o "$work/post.out" -w '%{http_code}' "$base/api/jobs/$1/$2" || true; }
r=$(post "$job" cancel)
[[ $r == 200 ]] || fail "cancel of job $job: $r $(cat "$work/post.out")"
python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); assert a["job"] == int(sys.argv[2]) and a["cancelled"] > 0, a' "$work/post.out" "$job" ||
  fail "cancel answered $(cat "$work/post.out")"
wait_until 20 "job $job cancelled" api_is "/api/jobs/$job" "j['state'] in ('cancelled', 'failed', 'done')"
if [[ -n $failed_job ]]; then
  r=$(post "$failed_job" retry)
  [[ $r == 200 ]] || fail "retry of job $failed_job: $r $(cat "$work/post.out")"
  python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); assert a["job"] == int(sys.argv[2]) and a["retry_job"] > a["job"] and a["tasks"] >= 1, a' \
    "$work/post.out" "$failed_job" || fail "retry answered $(cat "$work/post.out")"
fi
r=$(post 999999999 cancel)
[[ $r == 404 ]] || fail "cancel of a job that does not exist: $r $(cat "$work/post.out")"

# 6. (--mock) A master that stops answering, or that refuses the token, after the page loaded:
# mocks that break after 6 GETs of /api/... (the first two polls).
if ((mock)); then
  for how in close 401; do
    port=8081
    [[ $how == close ]] || port=8082
    start_bg "mock-$how" d python3 "$here/mock_api.py" --host 127.0.0.1 --port "$port" --workers 1000 --jobs 10000 --token "$token" \
      --break-after 6 --break-with "$how"
    wait_until 20 "the $how mock's login URL" test -s "$work/mock-$how.out"
    browse "$work/dom-$how.html" "$(head -n 1 "$work/mock-$how.out")" --dump-dom
    stop_bg "mock-$how"
    if [[ $how == close ]]; then
      want='text("status-line").startswith("master unreachable, retrying")'
    else
      want='text("status-line").startswith("not logged in: open the login link the master printed, or run `taskmaster dashboard`")'
    fi
    dom_check "$work/dom-$how.html" "$want" '"dashq" in cells("queues")' 'os.environ["worker"] in cells("workers")' \
      'os.environ["job"] in cells("jobs")' 2>>"$work/dom.log" || fail "the page once the API broke ($how): $(tail -n 8 "$work/dom.log")"
  done
  echo "dashboard: a master gone says 'master unreachable, retrying', a refused token 'not logged in', the last data stays"

  # 7. (--mock) Clicks: mock_api.py's /_harness frames the page and clicks through it (pagers, Cancel,
  # no Retry on a cancelled job, Retry accepted, a job row), confirm() answered yes; the POSTs pass the mock's CSRF check.
  start_bg mock-harness d python3 "$here/mock_api.py" --host 127.0.0.1 --port 8083 --workers 1000 --jobs 10000 --token "$token" --harness
  wait_until 20 "the harness mock's login URL" test -s "$work/mock-harness.out"
  budget=30000 browse "$work/dom-harness.html" "$(head -n 1 "$work/mock-harness.out")&harness=1" --dump-dom
  stop_bg mock-harness
  dom_check "$work/dom-harness.html" 'text("harness").endswith("DONE") and "FAIL" not in text("harness")' 2>>"$work/dom.log" ||
    fail "clicking through the page: $(python3 -c 'import html,re,sys; print(html.unescape(re.search(r"<pre id=.harness.>(.*?)</pre>", open(sys.argv[1]).read(), re.S).group(1)))' "$work/dom-harness.html" 2>&1)"
  echo "dashboard: clicks work: jobs and workers pagers, Cancel, no Retry on a cancelled job, Retry accepted, a job row opens its panel"
fi
echo "dashboard: ok ($( ((mock)) && echo mock || echo master); screenshot $shot, $shot_size bytes)"
