# What the postgres plugin's scripts share: one PostgreSQL server per service, run from
# the distribution's binaries (/usr/lib/postgresql/VERSION/bin), listening on 127.0.0.1
# only, with its cluster in the service's data/ directory.
#
# Settings saved by install (settings.env): SERVER_USER, PG_VERSION, PG_BIN, PORT,
# DB_NAME, DB_USER, PASSWORD.

PG_SERVER_USER=postgres
# Next to the usual port, which the distribution's own cluster may take at boot.
PG_FIRST_PORT=5433
PG_LIB=/usr/lib/postgresql
# When the first backup schedule is added: a weekly verify (Sunday, 05:00), after the night's backups.
PG_VERIFY_CRON='0 5 * * 0'

# WAL archiving and backups (pgBackRest): prepare_archiving runs at every start.
source "$(dirname "${BASH_SOURCE[0]}")/backup.sh"
# Off-site targets: further pgBackRest repositories in S3-compatible buckets.
source "$(dirname "${BASH_SOURCE[0]}")/targets.sh"

data_dir() { printf '%s/data\n' "$SERVICE_DIR"; }
log_file() { printf '%s/logs/postgresql.log\n' "$SERVICE_DIR"; }

# dsn: how clients reach the database (what DATABASE_URL is set to on link).
dsn() {
  printf 'postgres://%s:%s@127.0.0.1:%s/%s\n' "$DB_USER" "$PASSWORD" "$PORT" "$DB_NAME"
}

# use_client: point libpq's variables at this service, for psql, pg_dump and pg_restore.
# The password travels in the environment, never on a command line that `ps` shows.
use_client() {
  export PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER="$DB_USER" PGPASSWORD="$PASSWORD"
  export PGDATABASE="$DB_NAME" PGCONNECT_TIMEOUT=10 PGAPPNAME="gokku-$GOKKU_PLUGIN_NAME"
}

# postmaster_pid: the server's pid when it runs.
postmaster_pid() {
  server_pid "$(data_dir)/postmaster.pid" postgres
}

is_running() {
  postmaster_pid >/dev/null
}

require_running() {
  is_running || fail "service '$SERVICE' is stopped; start it with: gokku $GOKKU_PLUGIN_NAME:start $SERVICE"
}

# write_server_conf: what Gokku decides about the server, in a file of its own that
# postgresql.conf includes, so the rest of postgresql.conf stays the distribution's.
# No Unix socket: every client, Gokku's included, comes in over TCP with the password.
write_server_conf() {
  local conf
  conf="$(data_dir)/gokku.conf"
  as_server_user tee "$conf" >/dev/null <<EOF
# Written by Gokku's $GOKKU_PLUGIN_NAME plugin for service $SERVICE; rewritten by it.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = ''
EOF
}

# start_server: start the server and wait until it accepts connections. On failure it
# shows why and returns 3 when the port was taken by someone else (install then tries
# another one), 1 otherwise.
start_server() {
  local log offset
  if is_running; then
    say "PostgreSQL for $SERVICE is already running on port $PORT"
    return 0
  fi
  prepare_archiving
  log=$(log_file)
  offset=$(log_size "$log")
  # pg_ctl starts the server in a session of its own: it outlives this script and is
  # not hung up with it.
  if as_server_user "$PG_BIN/pg_ctl" start -D "$(data_dir)" -l "$log" -w -t 120 -s; then
    rm -f -- "$SERVICE_DIR/paused"
    say "PostgreSQL $PG_VERSION for $SERVICE running on 127.0.0.1:$PORT"
    return 0
  fi
  log_since "$log" "$offset" | tail -n 20 >&2
  if log_since "$log" "$offset" | grep -q 'Address already in use'; then
    return 3
  fi
  printf ' !     PostgreSQL for %s did not start (see: gokku %s:logs %s)\n' \
    "$SERVICE" "$GOKKU_PLUGIN_NAME" "$SERVICE" >&2
  return 1
}

# stop_server: a fast shutdown (clients are disconnected, everything is written out);
# when that does not finish, an immediate one; when even that fails, KILL.
stop_server() {
  local pid
  pid=$(postmaster_pid) || {
    say "PostgreSQL for $SERVICE is not running"
    return 0
  }
  as_server_user "$PG_BIN/pg_ctl" stop -D "$(data_dir)" -m fast -w -t 60 -s ||
    as_server_user "$PG_BIN/pg_ctl" stop -D "$(data_dir)" -m immediate -w -t 30 -s ||
    kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 30 || fail "PostgreSQL for $SERVICE (pid $pid) does not stop"
  # The server archives its last segment as it stops: the targets get it now too.
  [ -z "$(target_names)" ] || ship_wal >/dev/null 2>&1 || true
  say "PostgreSQL for $SERVICE stopped"
}

# ---- Exposure beyond loopback (expose, unexpose) -----------------------------------------
# Exposed, the server listens on every address with TLS on; pg_hba.conf lets connections
# from beyond loopback in only over TLS and with scram-sha-256 (a marked block of its own,
# after initdb's loopback lines: a plain connection from elsewhere matches no line). The
# settings live in a file of their own that postgresql.conf includes.

EXPOSED_CONF=gokku-exposed.conf
HBA_BEGIN='# gokku: exposed beyond loopback, TLS only (begin)'
HBA_END='# gokku: exposed (end)'

tls_dir() { printf '%s/tls\n' "$SERVICE_DIR"; }

is_exposed() {
  [ -s "$(data_dir)/$EXPOSED_CONF" ]
}

# expose_files: write the settings and the pg_hba.conf lines (read when the server starts).
expose_files() {
  local data tls
  data=$(data_dir)
  tls=$(tls_dir)
  as_server_user tee "$data/$EXPOSED_CONF" >/dev/null <<EOF
# Written by Gokku's $GOKKU_PLUGIN_NAME:expose for service $SERVICE; removed by unexpose.
listen_addresses = '*'
ssl = on
ssl_cert_file = '$tls/server.crt'
ssl_key_file = '$tls/server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
EOF
  grep -qxF "include_if_exists '$EXPOSED_CONF'" "$data/postgresql.conf" ||
    printf "include_if_exists '%s'\n" "$EXPOSED_CONF" |
    as_server_user tee -a "$data/postgresql.conf" >/dev/null
  printf '%s\n' "$HBA_BEGIN" "hostssl all all 0.0.0.0/0 scram-sha-256" \
    "hostssl all all ::/0 scram-sha-256" "$HBA_END" |
    as_server_user tee -a "$data/pg_hba.conf" >/dev/null
}

# unexpose_files: back to loopback only (from the next start on). The settings file is
# left empty, not removed: the server would log a missing one at every start.
unexpose_files() {
  local data
  data=$(data_dir)
  : | as_server_user tee "$data/$EXPOSED_CONF" >/dev/null
  as_server_user sed -i "\|^$HBA_BEGIN\$|,\|^$HBA_END\$|d" "$data/pg_hba.conf"
}

# ---- info SERVICE --FIELD -------------------------------------------------------------
# info_value FIELD: one of show_info_flag's fields (the helpers'), for this plugin.
info_value() {
  case "$1" in
    config-dir | data-dir) data_dir ;;
    dsn) dsn ;;
    exposed-ports) if is_exposed; then echo "$PORT"; else echo -; fi ;;
    internal-ip) echo 127.0.0.1 ;;
    links) echo "${GOKKU_LINKED_APPS:--}" ;;
    service-root) echo "$SERVICE_DIR" ;;
    status) service_state ;;
    version) "$PG_BIN/postgres" --version | sed -n 's/.*(PostgreSQL) \([^ ]*\).*/\1/p' ;;
  esac
}
