#!/bin/sh
# Serve ThoughtsBackend with uWSGI; on SIGTERM or SIGINT, stop without losing a request.
# Run it from the code directory (the image's WORKDIR /opt/code; `make run` cds there).
#
# Environment (default in brackets), besides what the app and uwsgi.ini read:
#   PUBLIC_KEY, PUBLIC_KEY_FILE  the token key; with neither, a pair is made in ./keys
#   PORT           the HTTP port [8000]
#   CODE_DIR       the directory holding wsgi.py and init_db.py [the current directory]
#   UWSGI_INI      uWSGI's configuration [uwsgi.ini beside this script]
#   UWSGI_RUN_DIR  the master FIFO, pidfile and sockets [/opt/uwsgi/run]
#   PROMETHEUS_MULTIPROC_DIR  the workers' metrics files [$UWSGI_RUN_DIR/metrics]
#   STOP_TIMEOUT   seconds from the signal to a forced stop [8: Docker kills at 10]
#
# Stopping. uWSGI 2.0's graceful stop, `q` on the master FIFO, lets each worker finish
# its current request and drops the requests queued behind the busy workers. So this
# script first waits until every TCP connection to PORT that was open at the signal is
# closed, answered, while uWSGI goes on serving; then writes `q`; then waits for uWSGI.
# A second signal, or STOP_TIMEOUT, kills what is left.
# Exit status: uWSGI's (0 after a graceful stop); 1 after a forced stop.
set -eu

# PID 1 ignores the signals it has no handler for: count them from the start.
signal=
signals=0
trap 'signal=TERM; signals=$((signals + 1))' TERM
trap 'signal=INT; signals=$((signals + 1))' INT
trap 'signal=ALRM; signals=$((signals + 1))' ALRM # the stop's deadline, from the watchdog

# This script's directory without running dirname (every program started costs the start).
case $0 in */*) here=${0%/*} ;; *) here=. ;; esac
ini=${UWSGI_INI:-$(cd "$here" && pwd)/uwsgi.ini}
cd "${CODE_DIR:-.}"
# uWSGI takes every UWSGI_* variable for one of its options, and refuses unknown ones in
# strict mode: the run directory reaches uwsgi.ini as RUN_DIR.
RUN_DIR=${UWSGI_RUN_DIR:-/opt/uwsgi/run}
export RUN_DIR CODE_DIR="$PWD" PORT="${PORT:-8000}"
unset UWSGI_INI UWSGI_RUN_DIR
fifo=$RUN_DIR/master.fifo
stop_timeout=${STOP_TIMEOUT:-8}
for number in "$PORT" "$stop_timeout"; do
    case $number in '' | *[!0-9]*)
        echo "start_server: PORT and STOP_TIMEOUT must be whole numbers, not '$number'" >&2
        exit 2
        ;;
    esac
done

# 1. No key source given (a PEM key, a JWK Set, or an issuer to discover): make a pair in
# ./keys (an existing pair is kept) and use its public half. Python runs only to make one:
# its imports would slow every later start.
if [ -z "${PUBLIC_KEY:-}${PUBLIC_KEY_FILE:-}${JWKS_FILE:-}${JWKS_URL:-}${TOKEN_ISSUER:-}" ]; then
    [ -f keys/private.pem ] && [ -f keys/public.pem ] ||
        python -m thoughts_backend generate-keys --if-missing --dir keys
    export PUBLIC_KEY_FILE="$PWD/keys/public.pem"
fi
[ "$signals" -eq 0 ] || exit 0

# 2. The database is migrated to head (unless MIGRATE_ON_START=false) by uWSGI's master
# as it loads the app (wsgi.py runs init_db.py's main), before it forks the workers: the
# app is imported once.
# A bad setting or a database that cannot be used stops uWSGI, with one sentence.

# 3. prometheus_client adds up, for /metrics, the files each worker writes in this
# directory: empty it of a previous run's files, whose counts would come back.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$RUN_DIR/metrics}"
mkdir -p "$RUN_DIR" "$PROMETHEUS_MULTIPROC_DIR"
# One rm for all (and for a FIFO left by a run that was killed).
rm -f "$PROMETHEUS_MULTIPROC_DIR"/counter_*.db "$PROMETHEUS_MULTIPROC_DIR"/gauge_*.db \
    "$PROMETHEUS_MULTIPROC_DIR"/histogram_*.db "$PROMETHEUS_MULTIPROC_DIR"/summary_*.db "$fifo"

# The TCP connections to PORT that are open: established (01), being set up (03), or
# closed by the client but not yet by us (08), from the kernel's tables. Each is named by
# its socket's inode once a process holds it, by its addresses until then (the addresses
# of a closed connection may be reused at once). Given such names, only those.
port_hex=$(printf '%04X' "$PORT")
tables=/proc/net/tcp
[ -r /proc/net/tcp6 ] && tables="$tables /proc/net/tcp6"
open_connections() {
    # shellcheck disable=SC2086 # $tables: paths without spaces, one argument each
    awk -v port=":$port_hex" -v among="${1:-}" '
        BEGIN { n = split(among, names, "\n"); for (i = 1; i <= n; i++) wanted[names[i]] = 1 }
        ($4 == "01" || $4 == "03" || $4 == "08") && substr($2, length($2) - 4) == port {
            addresses = $2 "-" $3; inode = "inode:" $10
            if (among == "" || inode in wanted || addresses in wanted)
                print ($10 == 0 ? addresses : inode)
        }' $tables || true
}

# stop() and force() run while uWSGI does: none of their commands may end this script
# (set -e), which would leave uWSGI running on its own.
stop() {
    started=$(date +%s)
    echo "start_server: SIG$signal: answering the requests already received, then stopping uWSGI" >&2 || true
    (sleep "$stop_timeout" >/dev/null 2>&1 && kill -ALRM $$) &
    watchdog=$!
    # 5a. Drain, for at most half the time allowed. A signal that comes while uWSGI is
    # still starting (loading the app, creating the schema) lets it finish first: only its
    # ready master, which makes the FIFO, can stop gracefully.
    pending=$(open_connections)
    while { [ -n "$pending" ] || [ ! -p "$fifo" ]; } && [ "$signals" -eq 1 ] &&
        kill -0 "$uwsgi_pid" 2>/dev/null && [ $(($(date +%s) - started)) -lt $((stop_timeout / 2)) ]; do
        sleep 0.1 2>/dev/null || sleep 1 # a sleep without fractions
        pending=$(open_connections "$pending")
    done
    # 5b. Each worker finishes its current request and exits; then the master. Opened
    # read-write, the FIFO cannot block this script, even if uWSGI has just exited.
    if [ "$signals" -eq 1 ] && [ -p "$fifo" ]; then echo q 1<>"$fifo" || force; else force; fi
}

# Stop uWSGI now. The master kills its workers on SIGINT, unless a `q` is under way: then
# it ignores signals and waits for its workers however long they take. So kill them too
# (and the HTTP router); the master then exits, cleaning up after itself. Until it is
# ready (no FIFO yet) the master ignores SIGINT and SIGTERM: then only SIGKILL stops it.
force() {
    forced=yes
    echo "start_server: SIG$signal: stopping uWSGI now, cutting the requests in progress" >&2 || true
    children=$(cat /proc/[0-9]*/stat 2>/dev/null |
        awk -v parent="$uwsgi_pid" '{ pid = $1; sub(/.*\) /, ""); if ($2 == parent) print pid }') || true
    if [ -p "$fifo" ]; then
        kill -INT "$uwsgi_pid" 2>/dev/null || true
    else
        kill -KILL "$uwsgi_pid" 2>/dev/null || true
    fi
    for child in $children; do kill -KILL "$child" 2>/dev/null || true; done
}

# 4. uWSGI, in a session of its own, so that a Ctrl+C in a terminal (SIGINT to the whole
# foreground process group) reaches this script only: the master takes SIGINT for "kill
# the workers now".
setsid uwsgi --ini "$ini" 2>&1 &
uwsgi_pid=$!

# 5. Wait for uWSGI to exit. A signal makes `wait` return early: then stop uWSGI (first
# signal), or stop it at once (any later one, or the deadline), and wait again.
status=0
stopping=
forced=
while kill -0 "$uwsgi_pid" 2>/dev/null; do
    if [ "$signals" -gt 0 ] && [ -z "$stopping" ]; then
        stopping=yes
        stop
    elif [ "$signals" -gt 1 ] && [ -z "$forced" ]; then
        force
    fi
    status=0
    wait "$uwsgi_pid" || status=$?
done
# uWSGI's vacuum removes the workers' socket, not the fastrouter's.
rm -f "$fifo" "$RUN_DIR/fastrouter.sock"
if [ -z "$stopping" ]; then
    echo "start_server: uWSGI exited by itself, status $status" >&2
    exit "$status"
fi
kill "$watchdog" 2>/dev/null || true
echo "start_server: uWSGI stopped ${forced:+by force }in $(($(date +%s) - started))s, status $status" >&2
[ -z "$forced" ] || exit 1
exit "$status"
