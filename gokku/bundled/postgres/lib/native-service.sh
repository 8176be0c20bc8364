# Functions for services whose server is a native process that the plugin starts, stops
# and watches itself (no containers): Gokku's bundled postgres and redis plugins.
#
# Each of those plugins ships its own copy of this file, so that a plugin stays one
# self-contained directory; Gokku's tests keep the copies identical.
#
# A service lives in $GOKKU_SERVICES_DIR/SERVICE:
#   config.json    Gokku's record of the service (written by Gokku, mirrored by install)
#   settings.env   the plugin's own settings, sourced by every command (mode 0600)
#   data/ logs/    owned by the server's user, mode 0700
#
# Output convention: stdout carries only what the command is for (a dump, query results,
# the DSN); progress goes to stderr as "-----> ..." and errors as " !     ...".

# say TEXT: a progress line on stderr (hidden by gokku --quiet).
say() {
  [ -n "${GOKKU_QUIET:-}" ] || printf -- '-----> %s\n' "$*" >&2
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

# service_path SERVICE: the service's directory, from a name checked the way Gokku checks
# it, so that nothing outside the services directory can be reached through a name.
service_path() {
  [[ "$1" =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] || usage_error "invalid service name '$1'"
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
  read -r comm <"/proc/$pid/comm" 2>/dev/null || return 1
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

# uptime_text SECONDS: "2d 3h 4m", the format of Gokku's get_container_uptime.
uptime_text() {
  printf '%dd %dh %dm\n' $(($1 / 86400)) $(($1 % 86400 / 3600)) $(($1 % 3600 / 60))
}

# show_logs FILE ARGS...: the `logs` command: the last lines of FILE (--tail N, default
# 100), and with -f/--follow (Dokku's -t too) keep printing what the server writes.
show_logs() {
  local file="$1" follow="" lines=100
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      -f | --follow | -t) follow=1 ;;
      -n | --tail)
        [ $# -ge 2 ] || usage_error "$1 needs a number of lines"
        lines="$2"
        shift
        ;;
      --tail=*) lines="${1#--tail=}" ;;
      *) usage_error "unknown option '$1'; usage: gokku ${GOKKU_COMMAND:-logs} SERVICE [-f] [--tail N]" ;;
    esac
    shift
  done
  [[ "$lines" =~ ^[0-9]+$ ]] || usage_error "--tail needs a number of lines, not '$lines'"
  if [ -n "$follow" ]; then
    exec tail -n "$lines" -F "$file"
  fi
  [ -f "$file" ] || return 0
  tail -n "$lines" "$file"
}

# keep_stdout_clean: for commands whose stdout is data (an export). When stderr is the
# very same file as stdout (2>&1, or the one terminal that `ssh -t` through OpenSSH gives,
# with no separate stderr), progress written to stderr would land in the data: stay quiet.
keep_stdout_clean() {
  if [ /dev/stdout -ef /dev/stderr ]; then
    GOKKU_QUIET=1
  fi
}

# meter WHAT: copy stdin to stdout byte for byte, and say on stderr how it goes: a line
# every 10 seconds and the total at the end. Long transfers over SSH otherwise look hung.
# dd copies exactly what it reads (it pads only when asked to) and, on SIGUSR1, reports
# how many bytes went through.
meter() {
  local what="$1" stats started dd_pid tick finished status=0
  stats=$(mktemp)
  started=$SECONDS
  dd bs=1M <&0 2>"$stats" &
  dd_pid=$!
  while :; do
    sleep 10 &
    tick=$!
    wait -n -p finished "$dd_pid" "$tick" || status=$?
    [ "$finished" = "$dd_pid" ] && break
    status=0
    kill -USR1 "$dd_pid" 2>/dev/null || true
    sleep 0.1
    say "$what: $(_meter_bytes "$stats") bytes so far ($((SECONDS - started)) s)"
  done
  kill "$tick" 2>/dev/null || true
  if [ "$status" -ne 0 ]; then
    grep "^dd:" "$stats" >&2 || true
    rm -f "$stats"
    return "$status"
  fi
  say "$what: $(_meter_bytes "$stats") bytes in $((SECONDS - started)) s"
  rm -f "$stats"
}

_meter_bytes() {
  sed -n 's/^\([0-9][0-9]*\) bytes.*/\1/p' "$1" | tail -n 1
}
