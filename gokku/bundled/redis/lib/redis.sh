# What the redis plugin's scripts share: one redis-server per service, listening on
# 127.0.0.1 only, with a password, its RDB snapshots in the service's data/ directory.
#
# Settings saved by install (settings.env): SERVER_USER, PORT, PASSWORD.

REDIS_SERVER_USER=redis
# Next to the usual port, which the distribution's own server may take at boot.
REDIS_FIRST_PORT=6380

data_dir() { printf '%s/data\n' "$SERVICE_DIR"; }
log_file() { printf '%s/logs/redis.log\n' "$SERVICE_DIR"; }
conf_file() { printf '%s/redis.conf\n' "$SERVICE_DIR"; }

# dsn: how clients reach the server (what REDIS_URL is set to on link).
dsn() {
  local scheme=redis
  ! is_exposed || scheme=rediss
  printf '%s://:%s@127.0.0.1:%s\n' "$scheme" "$PASSWORD" "$PORT"
}

# cli [--within SECONDS] ARGS...: redis-cli on this service (given up after SECONDS). The
# password travels in the environment, never on a command line that `ps` shows.
cli() {
  local -a tls limit=()
  if [ "${1:-}" = --within ]; then
    limit=(timeout "$2")
    shift 2
  fi
  mapfile -t tls < <(tls_options)
  REDISCLI_AUTH="$PASSWORD" "${limit[@]}" redis-cli -h 127.0.0.1 -p "$PORT" "${tls[@]}" "$@"
}

redis_pid() {
  server_pid "$(data_dir)/redis.pid" redis-server
}

is_running() {
  redis_pid >/dev/null
}

require_running() {
  is_running || fail "service '$SERVICE' is stopped; start it with: gokku $GOKKU_PLUGIN_NAME:start $SERVICE"
}

# write_server_conf: the whole configuration, readable by the server user only (it holds
# the password).
write_server_conf() {
  local conf
  conf=$(conf_file)
  (umask 077 && : >"$conf")
  [ "$EUID" -ne 0 ] || chown "$SERVER_USER:" "$conf"
  cat >"$conf" <<CONF
# Written by Gokku's $GOKKU_PLUGIN_NAME plugin for service $SERVICE; rewritten by it.
bind 127.0.0.1
port $PORT
protected-mode yes
requirepass $PASSWORD
daemonize yes
pidfile $(data_dir)/redis.pid
logfile $(log_file)
dir $(data_dir)
dbfilename dump.rdb
appendonly ${APPENDONLY:-no}
# Snapshots after 1 h with a change, 5 min with 100 changes, 1 min with 10000 (Redis'
# defaults); stop saves one too.
save 3600 1 300 100 60 10000
# Replicas, and export (redis-cli --rdb), get a snapshot written to disk first: a
# diskless transfer ends with an EOF marker that redis-cli leaves on stdout.
repl-diskless-sync no
$(exposed_lines)
CONF
}

# start_server: start the server and wait until it answers (it loads its snapshot first).
# On failure it shows why and returns 3 when the port was taken by someone else (install
# then tries another one), 1 otherwise.
start_server() {
  local log offset tries=1200
  if is_running; then
    say "Redis for $SERVICE is already running on port $PORT"
    return 0
  fi
  log=$(log_file)
  offset=$(log_size "$log")
  # daemonize: redis-server forks into a session of its own and outlives this script.
  as_server_user redis-server "$(conf_file)"
  # A ping has a time limit: whoever else holds the port may never answer it.
  until [ "$(cli --within 5 ping 2>/dev/null)" = PONG ]; do
    if log_since "$log" "$offset" | grep -q 'Address already in use'; then
      log_since "$log" "$offset" | tail -n 5 >&2
      return 3
    fi
    if ((tries-- <= 0)) || log_since "$log" "$offset" | grep -q 'aborting\|Fatal error'; then
      log_since "$log" "$offset" | tail -n 20 >&2
      printf ' !     Redis for %s did not start (see: gokku %s:logs %s)\n' \
        "$SERVICE" "$GOKKU_PLUGIN_NAME" "$SERVICE" >&2
      return 1
    fi
    sleep 0.1
  done
  rm -f -- "$SERVICE_DIR/paused"
  say "Redis for $SERVICE running on 127.0.0.1:$PORT"
}

# stop_server [save|nosave]: shut down, saving a snapshot first unless told not to; TERM
# and then KILL when the server does not go.
stop_server() {
  local pid
  pid=$(redis_pid) || {
    say "Redis for $SERVICE is not running"
    return 0
  }
  cli shutdown "${1:-save}" >/dev/null 2>&1 || true
  if ! wait_gone "$pid" 60; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait_gone "$pid" 10 || fail "Redis for $SERVICE (pid $pid) does not stop"
  say "Redis for $SERVICE stopped"
}

# ---- Exposure beyond loopback (expose, unexpose) -----------------------------------------
# Redis binds all its listeners to the same addresses, so a server that listens beyond
# loopback speaks TLS only, to every client, on its port (plain port 0), with its password
# as always. Its URL is then rediss://; apps linked to it would keep the other scheme,
# so the change is made only while none is.

tls_dir() { printf '%s/tls\n' "$SERVICE_DIR"; }

is_exposed() {
  [ -f "$SERVICE_DIR/exposed" ]
}

# exposed_lines: the end of redis.conf when exposed (later lines win).
exposed_lines() {
  is_exposed || return 0
  cat <<CONF
# Exposed (expose): TLS only, on every address.
bind * -::*
port 0
tls-port $PORT
tls-cert-file $(tls_dir)/server.crt
tls-key-file $(tls_dir)/server.key
tls-auth-clients no
tls-protocols "TLSv1.2 TLSv1.3"
CONF
}

# tls_options: redis-cli's options for this server, one a line (none unless exposed).
tls_options() {
  ! is_exposed || printf '%s\n' --tls --cacert "$(tls_dir)/server.crt"
}

# require_unlinked WHAT: refuse WHAT while apps are linked (their URL names the scheme).
require_unlinked() {
  grep -q '"linked_apps": \[\]' "$SERVICE_DIR/config.json" ||
    fail "service $SERVICE is linked to apps, whose REDIS_URL would no longer work: unlink them to $1"
}

# record_address: the port and URL in Gokku's record, for the apps linked from now on.
record_address() {
  _gokku_set services:config-set "$SERVICE" -- "port=$PORT"
  _gokku_set services:env-set "$SERVICE" -- "REDIS_URL=$(dsn)" "REDIS_PORT=$PORT"
}

# ---- info SERVICE --FIELD -------------------------------------------------------------
# info_value FIELD: one of show_info_flag's fields (the helpers'), for this plugin.
info_value() {
  case "$1" in
    config-dir | service-root) echo "$SERVICE_DIR" ;;
    data-dir) data_dir ;;
    dsn) dsn ;;
    exposed-ports) if is_exposed; then echo "$PORT"; else echo -; fi ;;
    internal-ip) echo 127.0.0.1 ;;
    links) echo "${GOKKU_LINKED_APPS:--}" ;;
    status) service_state ;;
    version) redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p' ;;
  esac
}
