# Gokku plugin helpers (installed as $GOKKU_ROOT/scripts/plugin-helpers.sh).
#
# Loaded into every plugin script through BASH_ENV, so plugins may call these functions
# without sourcing anything; sourcing this file again (official plugins do, by absolute
# path) is harmless. Functions that change shared state call back into `gokku`, which
# writes atomically under a lock: one implementation for the CLI and for plugins.
# Logging goes to stderr so that a command's stdout (an export) carries only its data.

case $- in *x*) _gokku_helpers_trace=1; set +x ;; *) _gokku_helpers_trace= ;; esac

if [ -z "${_GOKKU_HELPERS_LOADED:-}" ]; then
_GOKKU_HELPERS_LOADED=1

export GOKKU_ROOT="${GOKKU_ROOT:-${GOKKU_DIR:-/opt/gokku}}"
export GOKKU_DIR="${GOKKU_DIR:-$GOKKU_ROOT}"
export GOKKU_SCRIPTS_DIR="${GOKKU_SCRIPTS_DIR:-$GOKKU_ROOT/scripts}"
export GOKKU_PLUGINS_DIR="${GOKKU_PLUGINS_DIR:-$GOKKU_ROOT/plugins}"
export GOKKU_SERVICES_DIR="${GOKKU_SERVICES_DIR:-$GOKKU_ROOT/services}"
export GOKKU_APPS_DIR="${GOKKU_APPS_DIR:-$GOKKU_ROOT/apps}"

# Run the gokku CLI that started this script (same interpreter, same package).
_gokku() {
  if [ -n "${GOKKU_PYTHON:-}" ]; then
    PYTHONPATH="${GOKKU_PYTHONPATH:-}${PYTHONPATH:+:$PYTHONPATH}" "$GOKKU_PYTHON" -m gokku "$@"
  else
    gokku "$@"
  fi
}

_gokku_valid_name() {
  [[ "$1" =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] || { log_error "invalid name '$1'"; return 2; }
}

# ---- Utilities -------------------------------------------------------------------------

log_message() {
  printf '[%s] [%s] %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$1" "$2" >&2
}
log_info() { log_message INFO "$*"; }
log_warning() { log_message WARNING "$*"; }
log_error() { log_message ERROR "$*"; }

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
# and nothing listens on.
get_next_port() {
  _gokku services:next-port "${1:-9000}"
}

port_available() {
  [ "$(_gokku services:next-port "$1" 2>/dev/null)" = "$1" ]
}

# ---- App integration -------------------------------------------------------------------

# set_app_env APP ENV KEY VALUE: the value is stored exactly (spaces, quotes, '=').
set_app_env() {
  [ $# -eq 4 ] || { log_error "usage: set_app_env APP ENV KEY VALUE"; return 2; }
  _gokku --quiet config:set -a "$1" --env "$2" "$3=$4"
}

unset_app_env() {
  [ $# -eq 3 ] || { log_error "usage: unset_app_env APP ENV KEY"; return 2; }
  _gokku --quiet config:unset -a "$1" --env "$2" "$3"
}

# get_app_base_port APP [ENV]: the app's PORT variable, 3000 when unset.
get_app_base_port() {
  _gokku config:get -a "$1" --env "${2:-shared}" PORT 2>/dev/null || echo 3000
}

# ---- Service management ----------------------------------------------------------------

create_service_dir() {
  _gokku_valid_name "$1" || return 2
  mkdir -p "$GOKKU_SERVICES_DIR/$1"
}

# get_service_config SVC [KEY]: the whole config.json, or one key of its config map.
get_service_config() {
  _gokku services:config-get "$@"
}

update_service_config() {
  [ $# -eq 3 ] || { log_error "usage: update_service_config SVC KEY VALUE"; return 2; }
  _gokku services:config-set "$1" "$2=$3"
}

# set_service_env SVC KEY VALUE: a variable that services:link writes into linked apps.
set_service_env() {
  [ $# -eq 3 ] || { log_error "usage: set_service_env SVC KEY VALUE"; return 2; }
  _gokku services:env-set "$1" "$2=$3"
}

# export_service_data SVC PATH / import_service_data SVC PATH: tar.gz of the service dir.
export_service_data() {
  _gokku_valid_name "$1" || return 2
  tar -czf "$2" -C "$GOKKU_SERVICES_DIR" "$1"
}

import_service_data() {
  _gokku_valid_name "$1" || return 2
  local entry
  while IFS= read -r entry; do
    case "$entry" in
      "$1" | "$1"/* | ./"$1" | ./"$1"/*) ;;
      *) log_error "import_service_data: $2 holds '$entry', outside service $1"; return 1 ;;
    esac
  done < <(tar -tzf "$2")
  tar -xzf "$2" -C "$GOKKU_SERVICES_DIR" --no-same-owner
}

# ---- Containers (Docker) ---------------------------------------------------------------

container_exists() {
  docker ps -a --format '{{.Names}}' | grep -Fqx -- "$1"
}

container_is_running() {
  docker ps --format '{{.Names}}' | grep -Fqx -- "$1"
}

get_container_status() {
  docker inspect -f '{{.State.Status}}' "$1" 2>/dev/null
}

get_container_port() {
  local mapping
  mapping=$(docker port "$1" "$2" 2>/dev/null | head -n 1) || return 1
  [ -n "$mapping" ] || return 1
  printf '%s\n' "${mapping##*:}"
}

get_container_started() {
  docker inspect -f '{{.State.StartedAt}}' "$1" 2>/dev/null
}

# get_container_uptime NAME: "Xd Yh Zm" since the container started.
get_container_uptime() {
  local started now seconds
  started=$(get_container_started "$1") || return 1
  started=$(date -d "$started" +%s 2>/dev/null) || return 1
  now=$(date +%s)
  seconds=$(( now - started ))
  [ "$seconds" -ge 0 ] || seconds=0
  printf '%dd %dh %dm\n' $(( seconds / 86400 )) $(( seconds % 86400 / 3600 )) $(( seconds % 3600 / 60 ))
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

# cleanup_old_containers PATTERN [KEEP]: remove all but the KEEP (default 3) newest
# containers whose name matches PATTERN (a grep -E expression).
cleanup_old_containers() {
  local keep="${2:-3}"
  docker ps -a --format '{{.Names}}' | grep -E -- "$1" | tail -n +"$(( keep + 1 ))" |
    while IFS= read -r name; do
      docker rm -f "$name" >/dev/null
    done
}

fi

# --trace: start tracing here, so the trace shows the plugin's lines, not these.
if [ -n "$_gokku_helpers_trace" ] || [ "${GOKKU_TRACE:-}" = 1 ]; then
  unset _gokku_helpers_trace
  set -x
else
  unset _gokku_helpers_trace
fi
