#!/usr/bin/env bash
# A private PostgreSQL server for spurbench's scale-out path (tests, CI, a lab's study DB).
#
#   POSTGRES_PASSWORD=secret scripts/postgres.sh start DIR PORT DB USER
#   scripts/postgres.sh stop DIR
#
# start: installs PostgreSQL with apt-get if it is missing (needs root), initialises a
# cluster in DIR (owned by the postgres user when run as root), starts it on
# 127.0.0.1:PORT, and creates role USER (password from $POSTGRES_PASSWORD, never from
# argv) and database DB owned by it. POSTGRES_ALLOW=CIDR (e.g. 10.0.0.0/8) also listens
# on every interface and admits that network with the password. Idempotent: an existing
# cluster, a running server, the role and the database are reused (the password is
# reset). Prints the URL with the password masked. Exit codes: 0 ready; 2 usage; 3
# PostgreSQL is missing and cannot be installed here (callers may skip); other: a real
# failure (see DIR/server.log).
set -euo pipefail

usage() {
    sed -n '2,17p' "$0" >&2
    exit 2
}

find_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$d" && -x "$d/initdb" ]]; then
        echo "$d"
    elif command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

install_postgres() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "postgres.sh: PostgreSQL is not installed and cannot be installed here" \
             "(apt-get as root is needed)" >&2
        exit 3
    fi
    echo "postgres.sh: installing PostgreSQL with apt-get" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }; then
        echo "postgres.sh: apt-get could not install postgresql" >&2
        exit 3
    fi
}

# Run a command as the cluster owner: the postgres user when we are root (the server
# refuses to run as root), else ourselves.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    [[ $# -eq 4 ]] || usage
    local dir=$1 port=$2 db=$3 user=$4
    [[ -n "${POSTGRES_PASSWORD:-}" ]] || { echo "postgres.sh: set POSTGRES_PASSWORD" >&2; exit 2; }
    [[ "$port" =~ ^[0-9]+$ ]] || { echo "postgres.sh: PORT must be a number: $port" >&2; exit 2; }
    local name
    for name in "$db" "$user"; do
        [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] \
            || { echo "postgres.sh: DB and USER must be plain identifiers: $name" >&2; exit 2; }
    done

    local bin
    bin=$(find_bindir)
    if [[ -z "$bin" ]]; then
        install_postgres
        bin=$(find_bindir)
        [[ -n "$bin" ]] || { echo "postgres.sh: initdb not found after install" >&2; exit 3; }
    fi

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || { echo "postgres.sh: no 'postgres' user" >&2; exit 3; }
        chown postgres "$dir"
        runuser -u postgres -- test -x "$dir" || {
            echo "postgres.sh: the postgres user cannot reach $dir;" \
                 "make its parent folders traversable (chmod o+x) or pick another DIR" >&2
            exit 1
        }
    fi
    chmod 700 "$dir"

    if [[ ! -f "$dir/PG_VERSION" ]]; then
        # Local (socket) connections trust the cluster owner; TCP needs the password.
        as_owner "$bin/initdb" -D "$dir" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 -E UTF8 >"$dir.initdb.log" 2>&1 \
            || { cat "$dir.initdb.log" >&2; exit 1; }
    fi

    local listen=127.0.0.1
    if [[ -n "${POSTGRES_ALLOW:-}" ]]; then
        [[ "$POSTGRES_ALLOW" =~ ^[0-9a-fA-F:./]+$ ]] \
            || { echo "postgres.sh: POSTGRES_ALLOW must be a CIDR: $POSTGRES_ALLOW" >&2; exit 2; }
        listen='*'
        local rule="host all all $POSTGRES_ALLOW scram-sha-256"
        grep -qxF "$rule" "$dir/pg_hba.conf" || echo "$rule" >>"$dir/pg_hba.conf"
    fi

    if as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$dir" reload >/dev/null  # picks up pg_hba.conf
    else
        as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses='$listen' -p $port -k $dir -c max_connections=200" start \
            >/dev/null || { tail -n 20 "$dir/server.log" >&2; exit 1; }
    fi

    # The password travels on stdin as a SQL literal, never in a process's argv.
    local pw_sql=${POSTGRES_PASSWORD//\'/\'\'}
    as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
        >/dev/null <<SQL
SELECT 'CREATE ROLE "$user" LOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$user') \gexec
ALTER ROLE "$user" PASSWORD '$pw_sql';
SELECT 'CREATE DATABASE "$db" OWNER "$user"'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$db') \gexec
SQL
    echo "postgresql://$user:***@127.0.0.1:$port/$db"
}

stop() {
    [[ $# -eq 1 ]] || usage
    local dir=$1 bin
    bin=$(find_bindir)
    [[ -n "$bin" && -f "$dir/PG_VERSION" ]] || exit 0
    as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case "$cmd" in
    start) start "$@" ;;
    stop) stop "$@" ;;
    *) usage ;;
esac
