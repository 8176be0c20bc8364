# Gokku plugin helpers (installed as $GOKKU_ROOT/scripts/plugin-helpers.sh).
#
# Loaded into every plugin script through BASH_ENV, so plugins may call these functions
# without sourcing anything; sourcing this file again (official plugins do, by absolute
# path) is harmless. Functions that change shared state call back into `gokku`, which
# writes atomically under a lock: one implementation for the CLI and for plugins.
# The functions of Gokku's original helpers keep its observable behaviour (what they
# print, where, and their exit codes): its official plugins depend on it. Gokku's own
# bundled plugins keep stdout for data and report progress with `say` (stderr).

case $- in *x*) _gokku_helpers_trace=1; set +x ;; *) _gokku_helpers_trace= ;; esac

if [ -z "${_GOKKU_HELPERS_LOADED:-}" ]; then
_GOKKU_HELPERS_LOADED=1

export GOKKU_ROOT="${GOKKU_ROOT:-${GOKKU_DIR:-/opt/gokku}}"
export GOKKU_DIR="${GOKKU_DIR:-$GOKKU_ROOT}"
export GOKKU_SCRIPTS_DIR="${GOKKU_SCRIPTS_DIR:-$GOKKU_ROOT/scripts}"
export GOKKU_PLUGINS_DIR="${GOKKU_PLUGINS_DIR:-$GOKKU_ROOT/plugins}"
export GOKKU_SERVICES_DIR="${GOKKU_SERVICES_DIR:-$GOKKU_ROOT/services}"
export GOKKU_APPS_DIR="${GOKKU_APPS_DIR:-$GOKKU_ROOT/apps}"

# Call back into the gokku that started this script (same interpreter, same package, same
# state; gokku.callback). It starts from an empty environment (exec -c) plus the variables
# gokku gave this script that a callback needs, written in here from Python's list when the
# file is installed: nothing else this script has exported (an app's LD_PRELOAD, PYTHONPATH,
# GOKKU_REMOTE...) reaches it, not even the env program that passes those on.
_gokku() {
  if [ -n "${GOKKU_PYTHON:-}" ]; then
    local -a keep=()
    local name
    for name in @CALLBACK_VARIABLES@ ${_GOKKU_PASS:-}; do
      [ -z "${!name+set}" ] || keep+=("$name=${!name}")
    done
    (exec -c env "${keep[@]}" PYTHONPATH="${GOKKU_PYTHONPATH:-}" "$GOKKU_PYTHON" -P -m gokku.callback "$@")
  else
    gokku "$@"
  fi
}

# The name rule, written in here from Python's (gokku.names) when the file is installed.
_GOKKU_NAME_RE='^@NAME_PATTERN@$'

# _gokku_set VERB ARGS... -- KEY=VALUE...: call VERB with the assignments on stdin, never
# on a command line, where every local user could read them in `ps` (printf is a builtin).
_gokku_set() {
  local -a verb=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do verb+=("$1"); shift; done
  shift
  printf '%s\0' "$@" | _gokku "${verb[@]}" --stdin
}
_gokku_valid_name() {
  [[ "$1" =~ $_GOKKU_NAME_RE ]] || { log_error "invalid name '$1'"; return 2; }
}

# ---- Utilities -------------------------------------------------------------------------

# log_message LEVEL MSG: "[YYYY-mm-dd HH:MM:SS] [LEVEL] MSG" on stdout, as the original;
# log_info on stdout too, log_warning and log_error on stderr.
log_message() {
  printf '[%s] [%s] %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$1" "$2"
}
log_info() { log_message INFO "$*"; }
log_warning() { _gokku_tell log_message WARNING "$*"; }
log_error() { _gokku_tell log_message ERROR "$*"; }

# _gokku_tell COMMAND...: run COMMAND with its output on stderr, never failing. Progress
# and diagnostics are no part of the change a script makes: a stderr that cannot take
# them (a full disk, a closed pipe, a terminal hung up) must not stop it half-way, under
# set -e or by SIGPIPE (the subshell is what a SIGPIPE ends).
_gokku_tell() {
  ("$@" >&2 2>/dev/null) || true
}

command_exists() {
  command -v "$1" >/dev/null 2>&1
}

# generate_password [LENGTH]: LENGTH (default 25) characters from [A-Za-z0-9].
generate_password() {
  local length="${1:-25}" out=""
  [[ "$length" =~ ^[0-9]+$ ]] || { log_error "generate_password: bad length '$length'"; return 2; }
  while [ "${#out}" -lt "$length" ]; do
    out+=$(LC_ALL=C tr -dc 'A-Za-z0-9' < <(head -c 4096 /dev/urandom))
  done
  printf '%s\n' "${out:0:$length}"
}

# ---- Ports -----------------------------------------------------------------------------

# get_next_port [START]: first port >= START (default 9000) that no service was given
# and nothing listens on. It is held for ten minutes, so the next call gets another one
# even before this plugin records it.
get_next_port() {
  _gokku services:next-port "${1:-9000}"
}

# port_available PORT: true when PORT itself is free (holds nothing).
port_available() {
  _gokku services:next-port --check "$1" 2>/dev/null
}

# ---- Schedules ---------------------------------------------------------------------------
# Cron runs a service's schedules from the crontab of the state's owner; Gokku keeps the
# records (services/SVC/schedules.json), renders that crontab from them, records each run,
# and `gokku doctor` reports a schedule that stopped or fails.

# add_schedule SVC CRON [--first-also VERB --first-also-cron CRON] -- COMMAND...: run
# `gokku COMMAND...` on CRON (5 fields or @daily...; a bad one is refused with one line).
# --first-also: when SVC had no schedule yet, `gokku VERB SVC` on the second expression too.
add_schedule() {
  _gokku services:schedule add "$@"
}

# list_schedules SVC [--format json]: ID, CRON, COMMAND and LAST RUN of each schedule.
list_schedules() {
  _gokku services:schedule list "$@"
}

# remove_schedules SVC [ID]: one schedule, or all of the service's.
remove_schedules() {
  _gokku services:schedule remove "$@"
}

# ---- App integration -------------------------------------------------------------------

# set_app_env APP ENV KEY VALUE: the value is stored exactly (spaces, quotes, '=').
set_app_env() {
  [ $# -eq 4 ] || { log_error "usage: set_app_env APP ENV KEY VALUE"; return 2; }
  _gokku_set --quiet config:set -a "$1" --env "$2" -- "$3=$4"
}

unset_app_env() {
  [ $# -eq 3 ] || { log_error "usage: unset_app_env APP ENV KEY"; return 2; }
  _gokku --quiet config:unset -a "$1" --env "$2" "$3"
}

# get_app_base_port APP [ENV]: the app's PORT variable; nothing when it is unset.
get_app_base_port() {
  _gokku config:get -a "$1" --env "${2:-shared}" PORT 2>/dev/null || true
}

# run_in_sandbox APP [--] COMMAND [ARGS...]: run the app's own code (a build step, its
# command) the way it must run: inside bubblewrap, where GOKKU_ROOT is invisible except the
# current directory (the deploy's checkout, read-write) and the app's .env (read-only), with
# the app's variables as its environment, no privileges, dying with this script. Refuses
# with one line where no sandbox can be made, unless the admin set "sandbox: off".
run_in_sandbox() {
  _gokku sandbox-run "$@"
}

# run_client_in_sandbox VAR... -- COMMAND [ARGS...]: a client program the caller drives
# (psql, whose \! runs shell commands) in the same sandbox, with none of GOKKU_ROOT: only
# the variables named (the connection's: PGHOST, PGPASSWORD...) over a default PATH, and a
# HOME of its own that is gone afterwards; the caller's terminal and Ctrl-C reach it. Where
# no sandbox can be made an admin's session runs it as it is, anyone else's is refused
# with one line.
run_client_in_sandbox() {
  local -a names=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    names+=("$1")
    shift
  done
  _GOKKU_PASS="${names[*]}" _gokku sandbox-client $(_gokku_trust) "${names[@]}" "$@"
}

# client_sandbox_ready: whether run_client_in_sandbox can run a client for this caller;
# if not, the reason in one line on stderr. A command that reads its input before it runs
# the client asks first, so that a refusal is all it says.
client_sandbox_ready() {
  _gokku sandbox-client $(_gokku_trust) --check
}

# An admin's session is trusted with a client as it is where no sandbox can be made.
_gokku_trust() {
  [ "${GOKKU_ROLE:-}" != admin ] || printf '%s\n' --trusted
}

# ---- Service management ----------------------------------------------------------------

# create_service_dir SVC: make the service's directory and print its path, for
# SERVICE_DIR=$(create_service_dir "$1").
create_service_dir() {
  _gokku_valid_name "$1" || return 2
  mkdir -p "$GOKKU_SERVICES_DIR/$1" && printf '%s\n' "$GOKKU_SERVICES_DIR/$1"
}

# get_service_config SVC [KEY]: the whole config.json on one line (so that
# grep -o '"password":"[^"]*"' finds a value; {} for a missing service), or one key of
# its config map.
get_service_config() {
  _gokku services:config-get "$@"
}

update_service_config() {
  [ $# -eq 3 ] || { log_error "usage: update_service_config SVC KEY VALUE"; return 2; }
  _gokku_set services:config-set "$1" -- "$2=$3"
}

# set_service_env SVC KEY VALUE: a variable that services:link writes into linked apps.
set_service_env() {
  [ $# -eq 3 ] || { log_error "usage: set_service_env SVC KEY VALUE"; return 2; }
  _gokku_set services:env-set "$1" -- "$2=$3"
}

# export_service_data SVC PATH / import_service_data SVC PATH: a tar.gz of the service's
# directory, entries "./...", as the original writes them: backups move both ways.
# Import takes regular files and directories only, none leading out of the service.
export_service_data() {
  _gokku_valid_name "$1" || return 2
  [ -d "$GOKKU_SERVICES_DIR/$1" ] || { log_error "service $1 has no data to export"; return 1; }
  tar -czf "$2" -C "$GOKKU_SERVICES_DIR/$1" . || return 1
  echo "Service data exported to: $2"
}

import_service_data() {
  _gokku_valid_name "$1" || return 2
  [ -f "$2" ] || { log_error "import_service_data: no archive at $2"; return 1; }
  local entry
  while IFS= read -r entry; do
    case "/$entry/" in
      */../*) log_error "import_service_data: $2 holds '$entry', outside service $1"; return 1 ;;
    esac
    case "$entry" in
      . | ./*) ;;
      *) log_error "import_service_data: $2 holds '$entry', outside service $1"; return 1 ;;
    esac
  done < <(tar -tzf "$2" --quoting-style=escape) || return 1
  if tar -tvzf "$2" | cut -c1 | grep -qv '^[-d]$'; then
    log_error "import_service_data: $2 holds links or device files; only files and directories"
    return 1
  fi
  mkdir -p "$GOKKU_SERVICES_DIR/$1" &&
    tar -xzf "$2" -C "$GOKKU_SERVICES_DIR/$1" --no-same-owner || return 1
  echo "Service data imported from: $2"
}

# ---- Containers (Docker) ---------------------------------------------------------------

container_exists() {
  docker ps -a --format '{{.Names}}' | grep -Fqx -- "$1"
}

container_is_running() {
  docker ps --format '{{.Names}}' | grep -Fqx -- "$1"
}

# _gokku_inspect FORMAT NAME: a docker inspect field, "unknown" (exit 0) when there is none.
_gokku_inspect() {
  local value
  value=$(docker inspect -f "$1" "$2" 2>/dev/null) || value=""
  printf '%s\n' "${value:-unknown}"
}

get_container_status() {
  _gokku_inspect '{{.State.Status}}' "$1"
}

get_container_port() {
  local mapping
  mapping=$(docker port "$1" "$2" 2>/dev/null | head -n 1) || return 1
  [ -n "$mapping" ] || return 1
  printf '%s\n' "${mapping##*:}"
}

get_container_started() {
  _gokku_inspect '{{.State.StartedAt}}' "$1"
}

# get_container_uptime NAME: "1d 2h 5m", "2h 5m" or "5m" since the container started;
# "unknown" when it is missing or the time is not positive.
get_container_uptime() {
  local started
  started=$(date -d "$(get_container_started "$1")" +%s 2>/dev/null) || started=""
  if [ -z "$started" ] || [ "$(date +%s)" -le "$started" ]; then
    echo unknown
  else
    uptime_text $(( $(date +%s) - started ))
  fi
}

# wait_for_container NAME [MAX_ATTEMPTS]: wait (1 s per attempt, default 30) until running.
wait_for_container() {
  local attempts="${2:-30}" i
  for (( i = 0; i < attempts; i++ )); do
    container_is_running "$1" && return 0
    sleep 1
  done
  log_error "container $1 is not running after $attempts attempts"
  return 1
}

# cleanup_old_containers PATTERN [KEEP]: remove all but the KEEP (default 5) newest
# containers whose name matches PATTERN (a grep -E expression).
cleanup_old_containers() {
  local keep="${2:-5}"
  docker ps -a --format '{{.Names}}' | grep -E -- "$1" | tail -n +"$(( keep + 1 ))" |
    while IFS= read -r name; do
      docker rm -f "$name" >/dev/null
    done
}

# ---- Native servers --------------------------------------------------------------------
# For plugins whose service is a native server process the plugin starts, stops and
# watches itself (no containers), as Gokku's bundled postgres and redis plugins do.
#
# A service lives in $GOKKU_SERVICES_DIR/SERVICE:
#   config.json    Gokku's record of the service
#   settings.env   the plugin's own settings, sourced by every command (mode 0600)
#   data/ logs/    owned by the server's user, mode 0700
#
# Output convention: stdout carries only what the command is for (a dump, query results,
# the DSN); progress goes to stderr as "-----> ..." and errors as " !     ...".

# say TEXT: a progress line on stderr (hidden by gokku --quiet).
say() {
  [ -n "${GOKKU_QUIET:-}" ] || _gokku_tell printf -- '-----> %s\n' "$*"
}

# fail TEXT: an error line on stderr, exit 1. usage_error: the same for bad arguments, exit 2.
fail() {
  printf ' !     %s\n' "$*" >&2
  exit 1
}
usage_error() {
  printf ' !     %s\n' "$*" >&2
  exit 2
}

# help_rows USAGE SUMMARY [USAGE SUMMARY...]: help lines "  USAGE  SUMMARY", the summaries
# in one column whatever the plugin's name; a usage wider than 48 characters (Gokku's own
# help's limit) has a line of its own and its summary the next, in that column.
help_rows() {
  local -a rows=("$@")
  local width=0 most=48 i
  for ((i = 0; i < ${#rows[@]}; i += 2)); do
    if ((${#rows[i]} > width)); then width=${#rows[i]}; fi
  done
  if ((width > most)); then width=$most; fi
  for ((i = 0; i < ${#rows[@]}; i += 2)); do
    if ((${#rows[i]} > width)); then
      printf '  %s\n  %-*s  %s\n' "${rows[i]}" "$width" "" "${rows[i + 1]}"
    else
      printf '  %-*s  %s\n' "$width" "${rows[i]}" "${rows[i + 1]}"
    fi
  done
}

# service_path SERVICE: the service's directory, from a name checked the way Gokku checks
# it, so that nothing outside the services directory can be reached through a name.
service_path() {
  [[ "$1" =~ $_GOKKU_NAME_RE ]] || usage_error "invalid service name '$1'"
  printf '%s/%s\n' "$GOKKU_SERVICES_DIR" "$1"
}

# load_service SERVICE: check that the service exists, then read its settings. Sets
# SERVICE and SERVICE_DIR, plus every variable install saved (PORT, PASSWORD, ...).
load_service() {
  [ -n "${1:-}" ] || usage_error "missing service name; usage: gokku ${GOKKU_COMMAND:-$GOKKU_PLUGIN_NAME:COMMAND} SERVICE"
  SERVICE="$1"
  SERVICE_DIR=$(service_path "$SERVICE")
  [ -f "$SERVICE_DIR/config.json" ] || fail "service '$SERVICE' does not exist (see: gokku services:list)"
  [ -f "$SERVICE_DIR/settings.env" ] ||
    fail "service '$SERVICE' has no settings.env: it was not created by the $GOKKU_PLUGIN_NAME plugin"
  # shellcheck source=/dev/null
  source "$SERVICE_DIR/settings.env"
}

# save_settings VAR...: write these variables (their current values) as the service's
# settings.env. Scripts source it instead of asking Gokku for each value, which would start
# the gokku CLI once per value. Atomic (temp file + rename) and mode 0600: it holds the
# password.
save_settings() {
  local file="$SERVICE_DIR/settings.env" tmp name
  tmp=$(mktemp "$file.XXXXXX")
  for name in "$@"; do
    printf '%s=%q\n' "$name" "${!name}"
  done >"$tmp"
  mv -f "$tmp" "$file"
}

# update_settings VAR...: save_settings for these variables, keeping every other one the
# service's settings.env holds (a command that changes one setting after install).
update_settings() {
  local -a names=()
  local name
  while IFS= read -r name; do
    names+=("$name")
  done < <(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$SERVICE_DIR/settings.env")
  for name in "$@"; do
    [[ " ${names[*]} " == *" $name "* ]] || names+=("$name")
  done
  save_settings "${names[@]}"
}

# pick_server_user DEFAULT: the user the server runs as. Database servers have no business
# running as root (PostgreSQL refuses to), so when Gokku runs as root the server runs as
# DEFAULT, the system user the distribution's package created; otherwise as the caller.
pick_server_user() {
  if [ "$EUID" -ne 0 ]; then
    id -un
  elif id -u "$1" >/dev/null 2>&1; then
    printf '%s\n' "$1"
  else
    fail "there is no system user '$1' to run the server as; install the server's package (it creates the user)"
  fi
}

# as_server_user COMMAND...: run COMMAND as SERVER_USER. setpriv switches user without a
# login shell or PAM session (the redis user has no shell); the environment Gokku built for
# this script is kept as it is.
as_server_user() {
  if [ "$EUID" -eq 0 ] && [ "$SERVER_USER" != root ]; then
    setpriv --reuid="$SERVER_USER" --regid="$(id -g "$SERVER_USER")" --init-groups -- "$@"
  else
    "$@"
  fi
}

# require_reachable DIR: the server user must be able to walk down to DIR. A private
# directory on the way (mode 0700, owned by root) would make the server fail later with a
# confusing error; name that directory instead.
require_reachable() {
  local path="" part
  as_server_user test -x "$1" && return 0
  local -a parts
  IFS=/ read -ra parts <<<"${1#/}"
  for part in "${parts[@]}"; do
    path+="/$part"
    as_server_user test -x "$path" ||
      fail "the server runs as user '$SERVER_USER', who cannot enter $path" \
        "(mode $(stat -c %a "$path"), owner $(stat -c %U "$path")); let it through" \
        "(chmod o+x $path) or keep GOKKU_ROOT where '$SERVER_USER' can reach it"
  done
  fail "the server runs as user '$SERVER_USER', who cannot enter $1"
}

# make_server_dir DIR: a directory that only the server user can enter.
make_server_dir() {
  mkdir -p -m 0700 "$1"
  [ "$EUID" -ne 0 ] || chown "$SERVER_USER:" "$1"
}

# server_pid PIDFILE NAME: print the pid from PIDFILE's first line when that process is
# alive and called NAME. Pid files live with the data and so survive a reboot, after which
# their pid may belong to an unrelated process: the name check keeps us from taking that
# process for our server.
server_pid() {
  local pid comm
  [ -f "$1" ] || return 1
  read -r pid <"$1" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  { read -r comm <"/proc/$pid/comm"; } 2>/dev/null || return 1  # gone: say nothing
  [ "$comm" = "$2" ] || return 1
  printf '%s\n' "$pid"
}

# wait_gone PID SECONDS: wait until PID has exited; fail if it is still there after SECONDS.
wait_gone() {
  local tries=$(($2 * 10))
  while kill -0 "$1" 2>/dev/null; do
    ((tries-- > 0)) || return 1
    sleep 0.1
  done
}

# log_size FILE / log_since FILE OFFSET: remember where a log ends, and later show what the
# server wrote after that point (why a start failed, without older runs' lines).
log_size() {
  stat -c %s "$1" 2>/dev/null || echo 0
}
log_since() {
  tail -c +"$(($2 + 1))" "$1" 2>/dev/null || true
}

# uptime_text SECONDS: "2d 3h 4m", "3h 4m" or "4m": the format of get_container_uptime.
uptime_text() {
  local d=$(($1 / 86400)) h=$(($1 % 86400 / 3600)) m=$(($1 % 3600 / 60))
  if [ "$d" -gt 0 ]; then
    printf '%dd %dh %dm\n' "$d" "$h" "$m"
  elif [ "$h" -gt 0 ]; then
    printf '%dh %dm\n' "$h" "$m"
  else
    printf '%dm\n' "$m"
  fi
}

# show_logs FILE ARGS...: the `logs` command, as Dokku's: the last lines of FILE (-n N,
# default 100); -t/--tail [N] (Dokku's) or -f/--follow keeps printing what the server
# writes, starting with the last N lines.
show_logs() {
  local file="$1" follow="" lines=100
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      -f | --follow) follow=1 ;;
      -t | --tail)
        follow=1
        if [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]]; then
          lines="$2"
          shift
        fi
        ;;
      --tail=*) follow=1 lines="${1#--tail=}" ;;
      -n | --lines)
        [ $# -ge 2 ] || usage_error "$1 needs a number of lines"
        lines="$2"
        shift
        ;;
      --lines=*) lines="${1#--lines=}" ;;
      *) usage_error "unknown option '$1'; usage: gokku ${GOKKU_COMMAND:-logs} SERVICE [-n N] [-t|--tail [N]]" ;;
    esac
    shift
  done
  [[ "$lines" =~ ^[0-9]+$ ]] || usage_error "a number of lines, not '$lines'"
  if [ -n "$follow" ]; then
    exec tail -n "$lines" -F "$file"
  fi
  [ -f "$file" ] || return 0
  tail -n "$lines" "$file"
}

# service_state: running; paused when the plugin's pause stopped it and nothing started it
# since (the `paused` file, which starting removes); else stopped. Uses the plugin's
# is_running.
service_state() {
  if is_running; then
    echo running
  elif [ -f "$SERVICE_DIR/paused" ]; then
    echo paused
  else
    echo stopped
  fi
}

# pause_service / unpause_service: Dokku's pause (the server stopped, links and all left
# as they are; status "paused" until it is started again, which removes the mark) and
# unpause, with the plugin's stop_server and start_server.
pause_service() {
  stop_server
  : >"$SERVICE_DIR/paused"
  say "Service $SERVICE paused"
}
unpause_service() {
  [ "$(service_state)" = paused ] || fail "service $SERVICE is not paused"
  start_server
}

# show_info_flag FLAG: `info SERVICE --FIELD`: that one value, from the plugin's info_value
# FIELD. Dokku's single-field flags that mean something without containers: not --id,
# nor the Docker networks' --initial-network, --post-create-network, --post-start-network.
# The internal address is the one linked apps use; links, those the caller may read.
INFO_FLAGS=(config-dir data-dir dsn exposed-ports internal-ip links service-root status version)
show_info_flag() {
  local field
  for field in "${INFO_FLAGS[@]}"; do
    if [ "$1" = "--$field" ]; then
      info_value "$field"
      return
    fi
  done
  usage_error "unknown flag '$1'; valid flags: ${INFO_FLAGS[*]/#/--}"
}

# make_tls_cert DIR: a self-signed certificate for the service (DIR/server.crt) and its key
# (DIR/server.key, mode 0600), both the server user's, unless there already is one: its
# fingerprint stays what clients pinned. Valid for ten years, for the host's name and
# 127.0.0.1.
make_tls_cert() {
  local dir="$1"
  [ -f "$dir/server.crt" ] && [ -f "$dir/server.key" ] && return 0
  command -v openssl >/dev/null || fail "openssl is not installed: install the openssl package"
  make_server_dir "$dir"
  local host
  host=$(hostname -f 2>/dev/null || hostname)
  (umask 077 && as_server_user openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -nodes -days 3650 -subj "/CN=$host" -addext "subjectAltName=DNS:$host,IP:127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.crt" 2>/dev/null) ||
    fail "could not make a TLS certificate for $SERVICE with openssl"
  chmod 0600 "$dir/server.key"
  chmod 0644 "$dir/server.crt"
}

# tls_fingerprint DIR: the SHA-256 fingerprint of DIR/server.crt, for clients to pin.
tls_fingerprint() {
  openssl x509 -in "$1/server.crt" -noout -fingerprint -sha256 | cut -d= -f2
}

# check_free_port PORT: refuse, in one line, a port that is no number, is taken by another
# service or is listened on.
check_free_port() {
  [[ "$1" =~ ^[0-9]{1,5}$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ] ||
    usage_error "invalid port '$1': use a number from 1 to 65535"
  port_available "$1" || fail "port $1 is in use"
}

# keep_stdout_clean: for commands whose stdout is data (an export). When stderr is the
# very same file as stdout (2>&1, or the one terminal that `ssh -t` through OpenSSH gives,
# with no separate stderr), progress written to stderr would land in the data: stay quiet.
keep_stdout_clean() {
  if [ /dev/stdout -ef /dev/stderr ]; then
    GOKKU_QUIET=1
  fi
}

# meter WHAT [TOTAL]: copy stdin to stdout byte for byte, and say on stderr how it goes.
# Long transfers over SSH otherwise look hung. On a terminal, a line rewritten every
# second: bytes so far, rate, elapsed time, and "of TOTAL (NN%)" when the caller knows how
# many bytes to expect (TOTAL, e.g. from input_size). At the end one line always, in
# human units ("db: 12.3 MiB in 4.0 s (3.1 MiB/s)"); nothing under --quiet.
# dd copies exactly what it reads (it pads only when asked to) and, on SIGUSR1, reports
# how many bytes went through.
meter() {
  local what="$1" total="${2:-}" stats dd_pid tick finished status=0 started
  [[ "$total" =~ ^[1-9][0-9]*$ ]] || total=""
  stats=$(mktemp)
  started=${EPOCHREALTIME//[!0-9]/}
  dd bs=1M <&0 2>"$stats" &
  dd_pid=$!
  if [ -t 2 ] && [ -z "${GOKKU_QUIET:-}" ]; then
    while :; do
      sleep 1 &
      tick=$!
      wait -n -p finished "$dd_pid" "$tick" || status=$?
      [ "$finished" = "$dd_pid" ] && break
      status=0
      kill -USR1 "$dd_pid" 2>/dev/null || true
      sleep 0.05 # dd writes its report when it gets to it
      _gokku_tell printf '\r-----> %s: %s\033[K' "$what" \
        "$(_meter_progress "$(_meter_bytes "$stats")" "$total" "$started")"
    done
    kill "$tick" 2>/dev/null || true
  else
    wait "$dd_pid" || status=$?
  fi
  if [ "$status" -ne 0 ]; then
    grep "^dd:" "$stats" >&2 || true
    rm -f "$stats"
    return "$status"
  fi
  # On a terminal the line starts at the left edge, over the last progress line (an
  # export's terminal is raw: a newline before it did not return the carriage).
  [ ! -t 2 ] || [ -n "${GOKKU_QUIET:-}" ] || _gokku_tell printf '\r\033[K'
  say "$what: $(_meter_summary "$(_meter_bytes "$stats")" "$started")"
  rm -f "$stats"
}

# input_size: the size in bytes of this script's stdin when it is a file (gokku
# pg:import db < db.dump on the server), for meter's TOTAL; nothing for a pipe.
input_size() {
  if [ -f /dev/stdin ]; then
    stat -L -c %s /dev/stdin
  fi
}

_meter_bytes() {
  local bytes
  bytes=$(sed -n 's/^\([0-9][0-9]*\) bytes.*/\1/p' "$1" | tail -n 1)
  printf '%s\n' "${bytes:-0}"
}

# _meter_progress BYTES TOTAL START_US: "45.2 MiB of 120.0 MiB (37%), 11.3 MiB/s, 4.0 s".
_meter_progress() {
  local elapsed=$((${EPOCHREALTIME//[!0-9]/} - $3)) of=""
  [ -z "$2" ] || of=" of $(_meter_human "$2") ($(($1 * 100 / $2))%)"
  printf '%s%s, %s/s, %s\n' "$(_meter_human "$1")" "$of" \
    "$(_meter_human "$(_meter_rate "$1" "$elapsed")")" "$(_meter_seconds "$elapsed")"
}

# _meter_summary BYTES START_US: "12.3 MiB in 4.0 s (3.1 MiB/s)".
_meter_summary() {
  local elapsed=$((${EPOCHREALTIME//[!0-9]/} - $2))
  printf '%s in %s (%s/s)\n' "$(_meter_human "$1")" "$(_meter_seconds "$elapsed")" \
    "$(_meter_human "$(_meter_rate "$1" "$elapsed")")"
}

# _meter_rate BYTES MICROSECONDS: bytes per second.
_meter_rate() {
  printf '%d\n' $(($1 * 1000000 / ($2 > 0 ? $2 : 1)))
}

# _meter_human BYTES: "512 B", "12.3 MiB" (binary units, one decimal, rounded).
_meter_human() {
  local bytes=$1 unit=0 div=1 tenths
  local -a units=(B KiB MiB GiB TiB)
  while ((unit < 4 && bytes >= div * 1024)); do
    ((div *= 1024, unit++))
  done
  if ((unit == 0)); then
    printf '%d B\n' "$bytes"
    return
  fi
  tenths=$(((bytes * 10 + div / 2) / div))
  printf '%d.%d %s\n' $((tenths / 10)) $((tenths % 10)) "${units[unit]}"
}

# _meter_seconds MICROSECONDS: "0.4 s", "12.0 s", "754 s" (tenths below 100 s).
_meter_seconds() {
  local tenths=$((($1 + 50000) / 100000))
  if ((tenths < 1000)); then
    printf '%d.%d s\n' $((tenths / 10)) $((tenths % 10))
  else
    printf '%d s\n' $((tenths / 10))
  fi
}

fi

# --trace: start tracing here, so the trace shows the plugin's lines, not these.
if [ -n "$_gokku_helpers_trace" ] || [ "${GOKKU_TRACE:-}" = 1 ]; then
  unset _gokku_helpers_trace
  set -x
else
  unset _gokku_helpers_trace
fi
