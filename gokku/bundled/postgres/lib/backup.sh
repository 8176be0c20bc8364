# Backups of a postgres service, by pgBackRest: what the backup commands share, and what
# start_server does so that every service archives its WAL continuously.
#
# Each service has its own pgBackRest configuration, stanza (named after the service) and
# repository, all in its directory, so that nothing under /etc or /var is needed and two
# state roots on one host never share a lock, a log or a repository:
#   backup/pgbackrest.conf   written from the service's settings on every start (0600)
#   backup/repo/             repository 1: the backups and the archived WAL
#   backup/lock/ log/ spool/ pgBackRest's locks, logs and spool
#   data/gokku-backup.conf   archive_mode, archive_command, archive_timeout (included by
#                            postgresql.conf, next to gokku.conf)
# Everything there belongs to the server's user: PostgreSQL's archive_command writes into
# the repository as that user.

# The default RPO: a segment is archived at least once a minute while there are writes.
# Settable per service: gokku services:config-set SVC archive_timeout=SECONDS (next start).
ARCHIVE_TIMEOUT_DEFAULT=60
# How long a backup waits for the WAL it needs to be archived before it fails (pgBackRest's
# archive-timeout), settable per service: services:config-set SVC backup_wal_wait=SECONDS.
BACKUP_WAL_WAIT_DEFAULT=60
# pgBackRest's way of saying "keep every full backup" without warning at each backup.
RETENTION_FULL_ALL=9999999
BACKUP_TYPES="full diff incr"
BACKUP_LABEL_RE='^[0-9]{8}-[0-9]{6}F(_[0-9]{8}-[0-9]{6}[DI])?$'

backup_dir() { printf '%s/backup\n' "$SERVICE_DIR"; }
backrest_conf() { printf '%s/backup/pgbackrest.conf\n' "$SERVICE_DIR"; }
# backup.env: the backup settings the commands change (retention...), sourced here.
backup_settings() { printf '%s/backup.env\n' "$SERVICE_DIR"; }

pgbackrest_bin() {
  command -v pgbackrest || fail "pgBackRest is not installed: install the pgbackrest package"
}

# load_backup_settings: RETENTION_FULL / RETENTION_DAYS, and CIPHER_PASS (the repository's
# passphrase when it is encrypted), as the service's backup.env (0600) says.
load_backup_settings() {
  RETENTION_FULL="" RETENTION_DAYS="" CIPHER_PASS=""
  if [ -f "$(backup_settings)" ]; then
    # shellcheck source=/dev/null
    source "$(backup_settings)"
  fi
}

# save_backup_settings: backup.env from the variables load_backup_settings sets,
# atomically, mode 0600 (the helpers' save_settings format).
save_backup_settings() {
  local file tmp name
  file=$(backup_settings)
  tmp=$(mktemp "$file.XXXXXX")
  for name in RETENTION_FULL RETENTION_DAYS CIPHER_PASS; do
    printf '%s=%q\n' "$name" "${!name}"
  done >"$tmp"
  mv -f "$tmp" "$file"
}

# write_backrest_conf [REPO]: the service's pgBackRest configurations, from its settings;
# REPO: the repository's directory in backup/ when not "repo" (while it is replaced).
#   pgbackrest.conf     every repository: the local one (1) and the targets (2...), for
#                       backups, listings and restores
#   archive.conf        the local repository alone: PostgreSQL's archive_command pushes
#                       there only, so that a target that does not answer never stops it
#   target-NAME.conf    target NAME alone, as repository 1: what ship-wal pushes WAL with
# Console output off and warnings to stderr: pgBackRest's stdout is only what a command
# answers (info's JSON). start-fast: a backup starts with an immediate checkpoint rather
# than waiting for the next one (up to checkpoint_timeout, 5 minutes).
write_backrest_conf() {
  local dir repo="${1:-repo}" name
  dir=$(backup_dir)
  load_backup_settings
  _write_backrest_file pgbackrest.conf "repo1-path=$dir/$repo
$(repo_options 1 "$CIPHER_PASS")
$(targets_conf)" "$dir/lock"
  _write_backrest_file archive.conf "repo1-path=$dir/$repo
$(repo_options 1 "$CIPHER_PASS")" "$dir/lock"
  as_server_user find "$dir" -maxdepth 1 -name 'target-*.conf' -delete
  for name in $(target_names); do
    load_target "$name"
    # A lock directory of its own: pushing WAL there never waits for a local backup.
    _write_backrest_file "target-$name.conf" "$(TARGET_REPO=1 target_conf)
io-timeout=$TARGET_IO_TIMEOUT" "$dir/lock/target-$name"
  done
}

# _write_backrest_file FILE REPOSITORIES LOCK: one of the service's pgBackRest
# configurations in backup/, atomically, mode 0600, the server's user's.
_write_backrest_file() {
  local dir
  dir=$(backup_dir)
  (
    umask 077
    as_server_user mkdir -p "$3"
    as_server_user tee "$dir/$1.tmp" >/dev/null <<EOF
# Written by Gokku's $GOKKU_PLUGIN_NAME plugin for service $SERVICE on every start and
# backup setting change; changes made here are lost.
[global]
$2
lock-path=$3
log-path=$dir/log
spool-path=$dir/spool
log-level-console=off
log-level-stderr=warn
log-level-file=info
start-fast=y
compress-type=zst
process-max=2

[$SERVICE]
pg1-path=$(data_dir)
pg1-port=$PORT
pg1-user=$(superuser_name)
EOF
    as_server_user mv -f "$dir/$1.tmp" "$dir/$1"
  )
}

# seconds_setting KEY DEFAULT: the service's setting KEY in whole seconds (gokku
# services:config-set SVC KEY=SECONDS), else DEFAULT. Read from the service's record,
# which Gokku replaces whole: a call back into gokku would add a third of a second to
# every backup.
seconds_setting() {
  local seconds
  seconds=$(jq -r --arg key "$1" '.config[$key] // empty' "$SERVICE_DIR/config.json") ||
    fail "cannot read the settings of $SERVICE"
  seconds=${seconds:-$2}
  [[ "$seconds" =~ ^[1-9][0-9]{0,5}$ ]] ||
    fail "$1 of $SERVICE is '$seconds': give seconds (gokku services:config-set $SERVICE $1=$2)"
  printf '%s\n' "$seconds"
}

# prepare_archiving: run before the server starts (install and every start), so that
# services made before backups existed start archiving on their next start. Writes the
# pgBackRest configuration and the server's archive settings, and creates the stanza
# from the cluster's control file while the server is still down, so that the very first
# segment is archived as soon as the server switches it.
prepare_archiving() {
  local dir pgbackrest timeout include="include_if_exists 'gokku-backup.conf'"
  pgbackrest=$(pgbackrest_bin)
  timeout=$(seconds_setting archive_timeout $ARCHIVE_TIMEOUT_DEFAULT)
  dir=$(backup_dir)
  make_server_dir "$dir"
  as_server_user mkdir -p "$dir/log" "$dir/lock" "$dir/spool"
  write_backrest_conf
  # The WAL shipper, where the server's user (the archive_command's) can run it.
  as_server_user tee "$dir/ship-wal" <"$(dirname "${BASH_SOURCE[0]}")/ship-wal" >/dev/null
  as_server_user chmod 0700 "$dir/ship-wal"
  as_server_user tee "$(data_dir)/gokku-backup.conf" >/dev/null <<EOF
# Written by Gokku's $GOKKU_PLUGIN_NAME plugin for service $SERVICE on every start.
# Into the local repository; then the off-site targets get it in the background (their
# trouble is never the archive_command's: it answers for the local repository alone).
archive_mode = on
archive_command = '$pgbackrest --config="$dir/archive.conf" --stanza=$SERVICE archive-push "%p" && { "$dir/ship-wal" "$dir" $SERVICE $pgbackrest || true; }'
archive_timeout = ${timeout}s
EOF
  grep -qxF "$include" "$(data_dir)/postgresql.conf" ||
    printf '%s\n' "$include" | as_server_user tee -a "$(data_dir)/postgresql.conf" >/dev/null
  if [ ! -f "$dir/repo/backup/$SERVICE/backup.info" ]; then
    backrest_run "creating the backup repository of $SERVICE" stanza-create --no-online
  fi
}

# backrest ARGS...: pgBackRest on this service's stanza, as the server's user, connecting
# to the server over TCP with the password (PGHOST...: pgBackRest leaves the host to libpq).
backrest() {
  local pgbackrest
  pgbackrest=$(pgbackrest_bin)
  use_superuser
  as_server_user "$pgbackrest" --config="$(backrest_conf)" --stanza="$SERVICE" "$@"
}

# backrest_run WHAT ARGS...: backrest, its stdout passed on; on failure one line: WHAT
# failed, and pgBackRest's reason (its first ERROR line, without the error number).
backrest_run() {
  local what="$1" err status=0 reason
  shift
  err=$(mktemp)
  backrest "$@" 2>"$err" || status=$?
  if [ "$status" -ne 0 ]; then
    reason=$(sed -n 's/^.*ERROR: \[[0-9]*\]: //p' "$err" | head -n 1)
    rm -f "$err"
    # pgBackRest only says it waited for the WAL: say why it never came.
    [[ "$reason" != *"was not archived"* ]] || reason+=$(archiving_trouble "; ")
    fail "$what failed: ${reason:-pgBackRest exited $status}"
  fi
  sed -n 's/^WARN: /-----> note: /p' "$err" >&2
  rm -f "$err"
}

# require_archiving: the running server archives through pgBackRest (a service made
# before backups existed does from its next start on).
require_archiving() {
  local mode
  mode=$("$PG_BIN/psql" -X -A -t -d postgres -c "show archive_mode") ||
    fail "cannot reach PostgreSQL for $SERVICE"
  [ "$mode" = on ] ||
    fail "$SERVICE does not archive its WAL yet: it starts on the next start (gokku $GOKKU_PLUGIN_NAME:restart $SERVICE)"
}

# archiving_trouble [PREFIX]: PREFIX and why the server's WAL archiving fails right now
# (pgBackRest's last archive-push error: a full disk, say), or nothing when the newest
# attempt succeeded. Not checked before a backup: the archiver retries a failed segment
# only a minute later, and the backup's own WAL switch is what makes it try at once.
archiving_trouble() {
  local failing error
  failing=$("$PG_BIN/psql" -X -A -t -d postgres -c "select coalesce(last_failed_time > \
    coalesce(last_archived_time, '-infinity'), false) from pg_stat_archiver" 2>/dev/null) || return 0
  [ "$failing" = t ] || return 0
  # archive-push says why on its stderr, which lands in the server's log.
  # The last error, with the indented lines that continue it, as one line.
  error=$(tail -n 500 "$(log_file)" 2>/dev/null | awk '
    /ERROR: \[[0-9]+\]: / { sub(/^.*ERROR: \[[0-9]+\]: /, ""); error = $0; more = 1; next }
    more && /^[ \t]+[^ \t]/ { sub(/^[ \t]+/, ""); error = error " " $0; next }
    { more = 0 }
    END { print error }')
  printf '%sWAL archiving fails (%s)' "${1:-}" "${error:-see gokku $GOKKU_PLUGIN_NAME:logs $SERVICE}"
}

# backup_info_json: pgBackRest's info of the stanza (JSON, one element). A target that
# does not answer is left out, with a warning: pgBackRest would try it for minutes.
backup_info_json() {
  local name down=()
  for name in $(target_names); do
    load_target "$name"
    target_answers || down+=("$name")
  done
  if [ ${#down[@]} -eq 0 ]; then
    backrest_run "reading the backups of $SERVICE" info --output=json
    return
  fi
  for name in "${down[@]}"; do
    printf ' !     warning: target %s does not answer: its backups are not listed\n' "$name" >&2
  done
  {
    backrest_run "reading the backups of $SERVICE" info --repo=1 --output=json
    for name in $(target_names); do
      [[ " ${down[*]} " != *" $name "* ]] || continue
      load_target "$name"
      backrest_run "reading the backups of $SERVICE" info --repo="$TARGET_REPO" --output=json
    done
  } | jq -s '[.[0][0] + {backup: (map(.[0].backup // []) | add)}]'
}

# wal_archived_until: the time (epoch seconds) of the newest archived WAL file in the
# repository, 0 when there is none: a point in time after it cannot be restored to.
wal_archived_until() {
  local newest
  newest=$(as_server_user find "$(backup_dir)/repo/archive/$SERVICE" -type f -name '0*' \
    -printf '%T@\n' 2>/dev/null | sort -n | tail -n 1)
  printf '%s\n' "${newest%.*}"
}

# backups_records: the backups as JSON records, oldest first: label, the repository that
# holds it ("local" or a target's name), type, start and stop
# (UTC), duration, size in the repository (what it adds on disk) and of the database,
# the first and last WAL segment it needs, and the span it can restore to: up to the
# newest archived WAL, from the second after its end (pgBackRest keeps a backup's end to
# the second, and restores a time only from a backup that ended in an earlier second).
backups_records() {
  local until
  until=$(wal_archived_until)
  backup_info_json | jq --argjson until "${until:-0}" --argjson repos "$(repo_names_json)" '
    [.[0].backup[]? | {
      label: .label,
      repo: $repos[.database."repo-key" | tostring],
      type: .type,
      start: (.timestamp.start | todate),
      stop: (.timestamp.stop | todate),
      duration_seconds: (.timestamp.stop - .timestamp.start),
      size_bytes: .info.repository.delta,
      database_bytes: .info.size,
      wal_start: .archive.start,
      wal_stop: .archive.stop,
      restorable_from: (.timestamp.stop + 1 | todate),
      restorable_until: ([.timestamp.stop + 1, $until] | max | todate)
    }] | sort_by(.start)'
}

# retention_text: the retention in force, in words.
retention_text() {
  load_backup_settings
  if [ -n "$RETENTION_DAYS" ]; then
    echo "full backups of the last $RETENTION_DAYS days (and the one before them)"
  elif [ -n "$RETENTION_FULL" ]; then
    echo "the newest $RETENTION_FULL full backups"
  else
    echo "every backup (set a limit: gokku $GOKKU_PLUGIN_NAME:backup-retention $SERVICE --full N | --days D)"
  fi
}

# replace_repository WHAT: a new repository with the settings saved in backup.env (its
# cipher), a first full backup in it, and only then the old one removed: a repository
# cannot change its encryption, so the backups taken before go with the old one. While
# the new one is made WAL is archived into it: the full backup taken there needs it.
replace_repository() {
  local what="$1" dir
  dir=$(backup_dir)
  require_running
  use_superuser
  require_archiving
  as_server_user rm -rf -- "$dir/repo.new"
  write_backrest_conf repo.new
  # shellcheck disable=SC2064 # the directory is known now
  trap "as_server_user rm -rf -- '$dir/repo.new'; write_backrest_conf" EXIT
  backrest_run "$what" stanza-create
  say "Taking a first full backup into the new repository of $SERVICE"
  backrest_run "$what" backup --repo=1 --type=full
  as_server_user rm -rf -- "$dir/repo.old"
  as_server_user mv -- "$dir/repo" "$dir/repo.old"
  as_server_user mv -- "$dir/repo.new" "$dir/repo"
  trap - EXIT
  write_backrest_conf
  as_server_user rm -rf -- "$dir/repo.old"
}

# human_bytes BYTES: "2.7 MiB", as the meter writes sizes.
human_bytes() {
  _meter_human "$1"
}
