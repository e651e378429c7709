#!/bin/bash
# `cmake --install` into a scratch prefix: the binary, taskmaster.1 and the bash completion land where
# man and bash-completion look; the man page renders without warnings and names every command; the
# completion completes commands, options and file names (its function called as bash calls it).
# Usage: install_check.sh BUILD_DIR
set -euo pipefail
build=$1
prefix=$(mktemp -d /tmp/taskmaster-install-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --build "$build" --target taskmaster_docs >/dev/null
cmake --install "$build" --prefix "$prefix" >/dev/null
bin=$prefix/bin/taskmaster
man=$prefix/share/man/man1/taskmaster.1
completion=$prefix/share/bash-completion/completions/taskmaster
for f in "$bin" "$man" "$completion"; do [[ -s $f ]] || fail "$f not installed"; done

# The man page: no roff warnings, and every visible command (as `taskmaster --help` lists them).
warnings=$(groff -man -Tutf8 -ww -z "$man" 2>&1)
warnings=$(grep -v 'cannot adjust line' <<<"$warnings" || true)
[[ -z $warnings ]] || fail "groff warns: $warnings"
rendered=$(MANWIDTH=200 man -l "$man" 2>/dev/null)
help=$("$bin" --help)
commands=$(awk '/^Subcommands:/ {on = 1; next} on && /^  [a-z]/ {print $1}' <<<"$help")
[[ -n $commands ]] || fail "no commands in taskmaster --help"
for c in $commands; do
  grep -q "^ *taskmaster $c\$" <<<"$rendered" || fail "man page: no section for $c"
done
grep -q "TASKMASTER_CONFIG" <<<"$rendered" || fail "man page: no FILES/ENVIRONMENT"

# The completion, as bash calls it: COMP_WORDS/COMP_CWORD in, COMPREPLY out.
complete_words() {  # WORDS... (the last one is being completed)
  bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _taskmaster; printf "%s\n" "${COMPREPLY[@]}"' \
    _ "$completion" "$@"
}
spec=$(bash -c "source '$completion'; complete -p taskmaster")
grep -q -- '-F _taskmaster' <<<"$spec" || fail "no complete -F _taskmaster"
[[ $(complete_words taskmaster su) == submit ]] || fail "su -> $(complete_words taskmaster su)"
# (Outputs go through variables: grep -q ending a pipe early would be a SIGPIPE under pipefail.)
all=$(complete_words taskmaster '')
grep -qx worker <<<"$all" || fail "no worker among the commands"
grep -qx completion <<<"$all" && fail "hidden command completed"
[[ $(complete_words taskmaster worker --thr) == --threads ]] || fail "worker --thr"
[[ $(complete_words taskmaster --config x.toml worker --allow) == --allow-exec ]] || fail "after --config FILE"
[[ $(complete_words taskmaster submit --after-s) == --after-success ]] || fail "submit --after-s"
[[ -z $(complete_words taskmaster worker -j '') ]] || fail "a value of -j is not completed"
touch "$prefix/some-key-file"
[[ $(complete_words taskmaster status --key-file "$prefix/some-key") == "$prefix/some-key-file" ]] || fail "file names after --key-file"
[[ $(complete_words taskmaster help wor) == worker ]] || fail "help wor"
echo "install layout, man page and completion: ok"
