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
restore_target_options() {
  local mode="$1" value="${2:-}" records first last wanted
  records=$(backups_records)
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
      first=$(jq -r 'map(.stop) | min' <<<"$records")
      [ "$wanted" -ge "$(date -u -d "$first" +%s%6N)" ] ||
        fail "$value is before the first backup of $SERVICE ended ($first): nothing to restore from"
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
# pgBackRest's check waits to see archived: a restore gets everything committed so far.
archive_newest_wal() {
  is_running || return 0
  use_client
  "$PG_BIN/psql" -X -q -d postgres -c "select txid_current()" >/dev/null ||
    fail "cannot reach PostgreSQL for $SERVICE"
  backrest_run "archiving the newest WAL of $SERVICE" check
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

# start_recovered PASSWORD: start the restored cluster and wait until recovery reached its
# target and the server was promoted; PASSWORD is the superuser's in the restored data.
# Replaying much WAL takes as long as it takes, while the server runs and says it is
# starting up; any other refusal for ten seconds ends the wait.
start_recovered() {
  local password="$1" state offset reason refusals=0
  write_server_conf
  offset=$(log_size "$(log_file)")
  start_server || fail "the restored cluster of $SERVICE did not start"
  use_client
  while :; do
    state=$(PGPASSWORD="$password" "$PG_BIN/psql" -X -A -t -d postgres \
      -c "select pg_is_in_recovery()" 2>&1) || true
    case "$state" in
      f) return 0 ;;
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
}

# remember_source: what restoring into another service needs of the loaded source.
remember_source() {
  SOURCE_STANZA="$SERVICE" SOURCE_CONF=$(backrest_conf) SOURCE_PASSWORD="$PASSWORD"
  SOURCE_DB="$DB_NAME"
}

# restore_into_new NEW: make service NEW (services:create: its own port and password),
# then replace its fresh cluster by the restored one, with NEW's password and its
# database renamed after it. RESTORE_OPTS set, the source remembered (remember_source).
# When anything fails NEW is destroyed again: the source and the rest are unchanged.
restore_into_new() {
  local new="$1"
  _gokku services:create "$GOKKU_PLUGIN_NAME" --name "$new" ||
    fail "could not create service '$new' to restore into"
  trap '_undo_new "$new"' EXIT
  load_service "$new"
  stop_server >/dev/null
  rm -rf -- "$(data_dir)" "$(backup_dir)"
  make_server_dir "$(data_dir)"
  say "Restoring $SOURCE_STANZA into $new"
  restore_data_dir "$(data_dir)"
  start_recovered "$SOURCE_PASSWORD"
  {
    printf 'alter role "%s" password '"'%s'"';\n' "$DB_USER" "$PASSWORD"
    [ "$SOURCE_DB" = "$DB_NAME" ] ||
      printf 'alter database "%s" rename to "%s";\n' "$SOURCE_DB" "$DB_NAME"
  } | PGPASSWORD="$SOURCE_PASSWORD" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d postgres >/dev/null ||
    fail "could not give the restored cluster the credentials of $new"
  trap - EXIT
  say "Restored $SOURCE_STANZA into new service $new on 127.0.0.1:$PORT (link it: gokku services:link $new -a APP)"
}

_undo_new() {
  [ "$?" -ne 0 ] || return 0
  _gokku services:destroy "$1" --force >/dev/null 2>&1 || true
  printf ' !     service %s was removed again: nothing was changed\n' "$1" >&2
}

# restore_in_place: replace the loaded service's data by the restored cluster (same
# service, same repository: archiving goes on, on a new timeline). The old data directory
# is kept aside until the restored server is up, and put back when anything fails.
restore_in_place() {
  local aside was_running=""
  aside="$SERVICE_DIR/data.before-restore"
  ! is_running || was_running=1
  stop_server >/dev/null
  rm -rf -- "$aside"
  [ ! -d "$(data_dir)" ] || mv -- "$(data_dir)" "$aside"
  trap '_undo_in_place "$aside" "$was_running"' EXIT
  make_server_dir "$(data_dir)"
  say "Restoring $SERVICE in place"
  restore_data_dir "$(data_dir)"
  start_recovered "$PASSWORD"
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
