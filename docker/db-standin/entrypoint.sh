#!/bin/sh
# STAND-IN for the official postgres image's entrypoint (see Dockerfile beside this file):
# on the first start, an empty data directory gets a cluster whose superuser is
# POSTGRES_USER with POSTGRES_PASSWORD, and the database POSTGRES_DB; then the server runs
# as PID 1, listening on every address, password (SCRAM) authentication over TCP.
set -eu

: "${POSTGRES_PASSWORD:?the stand-in, as the official image, needs POSTGRES_PASSWORD}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --username="$user" --pwfile="$password_file" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
    rm -f "$password_file"
    printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    if [ "$database" != postgres ]; then
        # A server on the socket only, so that nothing connects before the database exists.
        pg_ctl --wait --silent -o "-c listen_addresses=''" start
        createdb --username="$user" "$database"
        pg_ctl --wait --silent --mode=fast stop
    fi
    echo "postgres-standin: initialised $PGDATA for $user, database $database"
fi

exec postgres -c listen_addresses='*'
