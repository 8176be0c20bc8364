# Restoring a postgres service from its pgBackRest backups (restore and clone share it):
# into a new service, made by `services:create` like any other (its own port and
# password), or in place. The source service is loaded (load_service) by the caller.
#
# A restore is recovery: pgBackRest copies a backup into an empty data directory and
# writes the recovery settings (restore_command reading the source's archive, the target);
# PostgreSQL replays the archived WAL up to the target, then promotes.

# restore_target_options MODE VALUE: the pgBackRest restore options for --latest, --backup
# LABEL or --time T into RESTORE_OPTS, after checking VALUE against the backups (one line
# and a non-zero exit when there is nothing to restore to). Needs the source loaded.
# RESTORE_FROM: a repository's name (an off-site target) when only its backups count.
restore_target_options() {
  local mode="$1" value="${2:-}" records first last wanted
  records=$(backups_records | jq --arg repo "${RESTORE_FROM:-}" 'map(select($repo == "" or .repo == $repo))')
  [ "$(jq length <<<"$records")" -gt 0 ] ||
    fail "$SERVICE has no backups to restore from (take one: gokku $GOKKU_PLUGIN_NAME:backup $SERVICE)"
  case "$mode" in
    latest)
      archive_newest_wal
      RESTORE_OPTS=(--type=default)
      ;;
    backup)
      [[ "$value" =~ $BACKUP_LABEL_RE ]] ||
        usage_error "'$value' is not a backup label (e.g. 20261202-221500F; see: gokku $GOKKU_PLUGIN_NAME:backups $SERVICE)"
      jq -e --arg wanted "$value" 'any(.[]; .label == $wanted)' <<<"$records" >/dev/null ||
        fail "$SERVICE has no backup $value (see: gokku $GOKKU_PLUGIN_NAME:backups $SERVICE)"
      # The database as it was when that backup ended.
      RESTORE_OPTS=(--set="$value" --type=immediate --target-action=promote)
      ;;
    time)
      wanted=$(date -u -d "$value" +%s%6N 2>/dev/null) ||
        usage_error "cannot read the time '$value' (e.g. '2026-12-02 22:15:00 UTC')"
      first=$(jq -r 'map(.restorable_from) | min' <<<"$records")
      [ "$wanted" -ge "$(date -u -d "$first" +%s%6N)" ] ||
        fail "$value is before the first time $SERVICE can be restored to ($first, the second after its first backup ended): nothing to restore from"
      if is_running; then
        # Taken before archive_newest_wal's commit: recovery to any time up to this one
        # finds a commit after it, which is where it stops.
        last=$(date -u +%s%6N)
        archive_newest_wal
      else
        last=$(($(wal_archived_until) * 1000000))
      fi
      [ "$wanted" -le "$last" ] ||
        fail "$value is after the last archived WAL of $SERVICE ($(date -u -d "@$((last / 1000000))" +%FT%TZ)): nothing to restore to"
      RESTORE_OPTS=(--type=time "--target=$(date -u -d "$value" '+%F %T.%6N+00')" --target-action=promote)
      ;;
  esac
}

# archive_newest_wal: when the source runs, a commit now, then a WAL switch that
# pgBackRest's check waits to see archived in the local repository (archive.conf: the
# targets get it after, from ship-wal): a restore gets everything committed so far. For a
# restore from a target (RESTORE_FROM), the target gets it now, as far as it answers.
archive_newest_wal() {
  is_running || return 0
  use_superuser
  "$PG_BIN/psql" -X -q -d postgres -c "select txid_current()" >/dev/null ||
    fail "cannot reach PostgreSQL for $SERVICE"
  (
    backrest_conf() { printf '%s/archive.conf\n' "$(backup_dir)"; }
    backrest_run "archiving the newest WAL of $SERVICE" check
  )
  [ -z "${RESTORE_FROM:-}" ] || ship_wal >/dev/null 2>&1 || true
}

# warn_target_lag: for a restore from a target (RESTORE_FROM), one line when that target
# lacks WAL the local repository has: what was committed after it is not restored.
warn_target_lag() {
  local lag
  [ -n "${RESTORE_FROM:-}" ] || return 0
  lag=$(target_lag "$RESTORE_FROM")
  [ -z "$lag" ] || printf ' !     warning: %s: the restore ends where its WAL does\n' "$lag" >&2
}

# restore_data_dir DIR: pgBackRest's restore of the source's backups (SOURCE_CONF,
# SOURCE_STANZA) into the empty directory DIR, with RESTORE_OPTS. pgBackRest checks every
# file it restores against its checksum.
restore_data_dir() {
  local err status=0 reason
  err=$(mktemp)
  as_server_user "$(pgbackrest_bin)" --config="$SOURCE_CONF" --stanza="$SOURCE_STANZA" \
    --pg1-path="$1" restore "${RESTORE_OPTS[@]}" 2>"$err" || status=$?
  reason=$(sed -n 's/^.*ERROR: \[[0-9]*\]: //p' "$err" | head -n 1)
  rm -f "$err"
  [ "$status" -eq 0 ] || fail "restoring into $SERVICE failed: ${reason:-pgBackRest exited $status}"
}

# start_recovered [SOURCE_DB]: start the restored cluster, wait until recovery reached
# its target and the server was promoted, then give it this service's credentials: its
# superuser gets this service's password (the restored data has the source's, which a
# backup file from another host does not tell), database SOURCE_DB, when given, is
# renamed after this service's, and the apps' role is made this service's (app_role_sql;
# not for a service made before app roles, whose apps hold the superuser). Until then the server takes no TCP client at all: only
# its own user, over a socket in a directory private to that user. Then it restarts as
# usual. Replaying much WAL takes as long as it takes, while the server says it is
# starting up; any other refusal for ten seconds ends the wait.
start_recovered() {
  local source_db="${1:-}" socket state offset reason refusals=0
  socket="$SERVICE_DIR/recovering"
  rm -rf -- "$socket"
  make_server_dir "$socket"
  printf 'local all all trust\n' | as_server_user tee "$socket/pg_hba.conf" >/dev/null
  write_server_conf
  as_server_user tee -a "$(data_dir)/gokku.conf" >/dev/null <<EOF
# Until Gokku has finished the restore (then rewritten without these lines).
listen_addresses = ''
unix_socket_directories = '$socket'
hba_file = '$socket/pg_hba.conf'
EOF
  offset=$(log_size "$(log_file)")
  start_server >/dev/null || fail "the restored cluster of $SERVICE did not start"
  while :; do
    state=$(as_server_user "$PG_BIN/psql" -X -A -t -h "$socket" -p "$PORT" -U "$(superuser_name)" \
      -d postgres -c "select pg_is_in_recovery()" 2>&1) || true
    case "$state" in
      f) break ;;
      t | *"starting up"*) refusals=0 ;;
      *) refusals=$((refusals + 1)) ;;
    esac
    if ! is_running; then
      reason=$(log_since "$(log_file)" "$offset" | grep -m 1 'FATAL:' | sed 's/^.*FATAL: *//')
      fail "recovery of $SERVICE failed: ${reason:-see gokku $GOKKU_PLUGIN_NAME:logs $SERVICE}"
    fi
    [ "$refusals" -lt 50 ] || fail "the restored cluster of $SERVICE does not answer: ${state//$'\n'/ }"
    sleep 0.2
  done
  {
    printf 'alter role "%s" password '"'%s'"';\n' "$(superuser_name)" "${SUPERUSER_PASSWORD:-$PASSWORD}"
    [ -z "$source_db" ] || [ "$source_db" = "$DB_NAME" ] ||
      printf 'alter database "%s" rename to "%s";\n' "$source_db" "$DB_NAME"
    # The apps' role, as this service's settings have it: the backup may predate app
    # roles (its superuser owning everything) or come from another service.
    if [ -n "${SUPERUSER:-}" ]; then
      printf '\\connect "%s"\n' "$DB_NAME"
      app_role_sql
    fi
  } | as_server_user "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$socket" -p "$PORT" \
    -U "$(superuser_name)" -d postgres >/dev/null ||
    fail "could not give the restored cluster the credentials of $SERVICE"
  stop_server >/dev/null
  write_server_conf
  rm -rf -- "$socket"
  start_server
}

# remember_source: what restoring into another service needs of the loaded source.
remember_source() {
  SOURCE_STANZA="$SERVICE" SOURCE_CONF=$(backrest_conf) SOURCE_DB="$DB_NAME"
}

# restore_into_new NEW: make service NEW (services:create: its own port and password),
# then replace its fresh cluster by the restored one, with NEW's password and its
# database renamed after it. RESTORE_OPTS set, the source remembered (remember_source).
# When anything fails NEW is destroyed again: the source and the rest are unchanged.
restore_into_new() {
  local new="$1"
  _gokku services:create "$GOKKU_PLUGIN_NAME" --name "$new" ||
    fail "could not create service '$new' to restore into"
  # shellcheck disable=SC2064 # NEW is gone by the time the trap runs: its name, now
  trap "_undo_new '$new'" EXIT
  load_service "$new"
  stop_server >/dev/null
  rm -rf -- "$(data_dir)" "$(backup_dir)"
  make_server_dir "$(data_dir)"
  say "Restoring $SOURCE_STANZA into $new"
  restore_data_dir "$(data_dir)"
  # The source's data says whether the source was exposed; the new service is not.
  unexpose_files
  start_recovered "$SOURCE_DB"
  trap - EXIT
  say "Restored $SOURCE_STANZA into new service $new on 127.0.0.1:$PORT (link it: gokku services:link $new -a APP)"
}

_undo_new() {
  local status=$?
  [ -z "${RESTORE_WORK:-}" ] || rm -rf -- "$RESTORE_WORK"
  [ "$status" -ne 0 ] || return 0
  _gokku services:destroy "$1" --force >/dev/null 2>&1 || true
  printf ' !     service %s was removed again: nothing was changed\n' "$1" >&2
}

# restore_in_place: replace the loaded service's data by the restored cluster (same
# service, same repository: archiving goes on, on a new timeline). The old data directory
# is kept aside until the restored server is up, and put back when anything fails.
restore_in_place() {
  local aside was_running="" was_exposed=""
  aside="$SERVICE_DIR/data.before-restore"
  ! is_running || was_running=1
  ! is_exposed || was_exposed=1
  stop_server >/dev/null
  rm -rf -- "$aside"
  [ ! -d "$(data_dir)" ] || mv -- "$(data_dir)" "$aside"
  trap '_undo_in_place "$aside" "$was_running"' EXIT
  make_server_dir "$(data_dir)"
  say "Restoring $SERVICE in place"
  restore_data_dir "$(data_dir)"
  # Exposed as the service is now, whatever it was when the backup was taken.
  unexpose_files
  [ -z "$was_exposed" ] || expose_files
  start_recovered
  trap - EXIT
  rm -rf -- "$aside"
  say "Restored $SERVICE in place; it runs on 127.0.0.1:$PORT"
}

_undo_in_place() {
  [ "$?" -ne 0 ] || return 0
  stop_server >/dev/null 2>&1 || true
  if [ -d "$1" ]; then
    rm -rf -- "$(data_dir)"
    mv -- "$1" "$(data_dir)"
  fi
  [ -z "$2" ] || start_server >/dev/null 2>&1 || true
  printf ' !     %s has its data as before the restore\n' "$SERVICE" >&2
}

# confirm_in_place: restoring in place replaces the service's data; an admin types the
# service's name on a terminal, as when destroying (gokku.confirm).
confirm_in_place() {
  local answer
  [ "${GOKKU_ROLE:-}" = admin ] ||
    fail "restoring $SERVICE in place replaces its data: admins only (restore into a new service with --into NEWSVC)"
  [ -t 0 ] ||
    fail "restoring $SERVICE in place replaces its data: confirm on a terminal (ssh -t) with --force"
  printf ' !     Restoring %s in place replaces its data since then.\n' "$SERVICE" >&2
  printf ' !     To proceed, type "%s": ' "$SERVICE" >&2
  IFS= read -r answer || answer=""
  [ "$answer" = "$SERVICE" ] || fail "confirmation did not match '$SERVICE': nothing was restored"
}

# restore_from_file NEW: service NEW from a backup file on stdin, as backup-export writes
# it (a tar of a pgBackRest repository's part; age-encrypted ones are decrypted by the
# caller). The file is read whole into a private directory, its layout checked, and
# pgBackRest's verify run over it before any service is made: a truncated or altered
# file is refused, naming the problem, and nothing is created.
restore_from_file() {
  local new="$1" work listing stanza label report problem
  [ ! -e "$(service_path "$new")" ] || fail "service '$new' already exists: restore into a new name"
  [ "${GOKKU_ROLE:-}" = admin ] || fail "restoring into a new service creates one: admins only (services:create)"
  [ ! -t 0 ] ||
    usage_error "pipe the backup file in, without a terminal: gokku $GOKKU_PLUGIN_NAME:restore $new --from-file - < FILE"
  SERVER_USER=$(pick_server_user "$PG_SERVER_USER")
  work=$(mktemp -d "${TMPDIR:-/tmp}/gokku-restore.XXXXXX")
  RESTORE_WORK="$work"
  trap 'rm -rf -- "$RESTORE_WORK"' EXIT
  [ "$EUID" -ne 0 ] || chown "$SERVER_USER:" "$work"
  meter "$new" "$(input_size)" >"$work/backup.tar"
  [ -s "$work/backup.tar" ] ||
    fail "nothing on stdin: pipe a backup file in (gokku $GOKKU_PLUGIN_NAME:backup-export SVC > FILE)"
  [ "$(head -c 21 "$work/backup.tar")" != "age-encryption.org/v1" ] ||
    fail "the backup file is encrypted with age: decrypt it on the way in (age -d -i KEY FILE | gokku $GOKKU_PLUGIN_NAME:restore $new --from-file -)"
  # A tar file ends with two zero blocks; tar itself takes a file cut at a header for
  # one that ends there. Then read through, data and all: listing alone skips over a
  # member cut short.
  [ "$(tail -c 1024 "$work/backup.tar" | tr -d '\0' | wc -c)" -eq 0 ] ||
    fail "the backup file is truncated: it does not end as a tar file ends"
  listing=$(LC_ALL=C tar -xOf "$work/backup.tar" 2>&1 >/dev/null) ||
    fail "the backup file is truncated or damaged: $(grep -m 1 '^tar: ' <<<"$listing" | sed 's/^tar: //')"
  listing=$(LC_ALL=C tar -tvf "$work/backup.tar")
  ! cut -c1 <<<"$listing" | grep -qv '^[-d]$' ||
    fail "the backup file holds links or devices: it was not written by $GOKKU_PLUGIN_NAME:backup-export"
  listing=$(tar -tf "$work/backup.tar")
  ! grep -qvE '^(backup|archive)/[a-z0-9][a-z0-9-]*(/[A-Za-z0-9._-]+)*/?$' <<<"$listing" ||
    fail "the backup file holds other files than a pgBackRest repository's: it was not written by $GOKKU_PLUGIN_NAME:backup-export"
  stanza=$(sed -n 's|^backup/\([^/]*\)/backup\.info$|\1|p' <<<"$listing")
  [ "$(wc -w <<<"$stanza")" -eq 1 ] && grep -qx "archive/$stanza/archive.info" <<<"$listing" ||
    fail "the backup file holds no pgBackRest repository of one service: it was not written by $GOKKU_PLUGIN_NAME:backup-export"
  label=$(sed -n "s|^backup/$stanza/\\([0-9]\\{8\\}-[0-9]\\{6\\}F[0-9_DI-]*\\)/backup\\.manifest\$|\\1|p" <<<"$listing" | sort | tail -n 1)
  [ -n "$label" ] || fail "the backup file holds no backup: it was not written by $GOKKU_PLUGIN_NAME:backup-export"

  as_server_user mkdir "$work/repo" "$work/log" "$work/lock"
  as_server_user tar -xf "$work/backup.tar" -C "$work/repo" --no-same-owner --no-same-permissions
  as_server_user tee "$work/pgbackrest.conf" >/dev/null <<EOF
[global]
repo1-path=$work/repo
lock-path=$work/lock
log-path=$work/log
log-level-console=off
log-level-stderr=warn
log-level-file=off
EOF
  report=$(as_server_user "$(pgbackrest_bin)" --config="$work/pgbackrest.conf" --stanza="$stanza" \
    verify --log-level-console=info 2>&1) ||
    fail "the backup file is damaged: $(sed -n 's/^.*ERROR: \[[0-9]*\]: //p' <<<"$report" | head -n 1)"
  # The repository's info files list the source's other backups too, which the file does
  # not hold: only problems with what it holds (its backups, its WAL) count.
  problem=$(grep -E 'INFO: .*(invalid|missing)' <<<"$report" | grep -F -e "$label" -e "${label%%_*}" |
    head -n 1 | sed 's/^.*INFO: //') || true
  [ -z "$problem" ] || fail "the backup file is damaged: $problem"
  problem=$(grep -E 'INFO: .*(invalid|missing).*[0-9A-F]{24}' <<<"$report" | head -n 1 | sed 's/^.*INFO: //') ||
    true
  [ -z "$problem" ] || fail "the backup file is damaged: $problem"

  SOURCE_CONF="$work/pgbackrest.conf" SOURCE_STANZA="$stanza" SOURCE_DB="$stanza"
  RESTORE_OPTS=(--set="$label" --type=immediate --target-action=promote)
  say "Backup $label of $stanza checked"
  restore_into_new "$new"
  rm -rf -- "$work"
}
