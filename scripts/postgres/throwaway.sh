#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the queue tests, on loopback only.
#   throwaway.sh start DIR   initdb into DIR (password auth), start it on a free
#                            port, print its URL (postgres://tinyfusion:…@127.0.0.1:PORT/tinyfusion)
#   throwaway.sh stop DIR    stop it and remove DIR
# Needs Debian's postgresql package; runs the server as the postgres user when
# called as root (the server refuses to run as root).
set -euo pipefail
command=${1:?start|stop}
dir=${2:?a directory for the cluster}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "no PostgreSQL server in /usr/lib/postgresql (apt-get install postgresql)" >&2; exit 1; }
as_owner() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }

case "$command" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s\n' "$password" > "$dir/password"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/password"
    as_owner "'$bin/initdb' -D '$dir/data' -U tinyfusion --auth=scram-sha-256 --pwfile='$dir/password' -E UTF8 >'$dir/initdb.log' 2>&1"
    # A random port; another one if it is taken.
    for try in 1 2 3 4 5 6 7 8; do
      port=$((20000 + RANDOM % 40000))
      if as_owner "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=200\" start >/dev/null"; then break; fi
      [ "$try" = 8 ] && { cat "$dir/server.log" >&2; exit 1; }
    done
    PGPASSWORD=$password "$bin/createdb" -w -h 127.0.0.1 -p "$port" -U tinyfusion tinyfusion
    echo "postgres://tinyfusion:$password@127.0.0.1:$port/tinyfusion"
    ;;
  stop)
    [ -d "$dir/data" ] && as_owner "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null" || true
    rm -rf "$dir"
    ;;
  *) echo "usage: throwaway.sh start|stop DIR" >&2; exit 2 ;;
esac
