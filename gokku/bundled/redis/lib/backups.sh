# Backups of a redis service: RDB snapshots kept in the service's backups/ directory, one
# file each, LABEL.rdb, where LABEL is the UTC time it was taken to the millisecond
# (20261202-223455-123: names sort as times do). A snapshot is copied under a hidden name
# and renamed once it is complete and checked: a backup killed half-way leaves at most a
# hidden .partial file, never a listed backup, and the next backup removes it.
#
# backups/.retention, when set (backup-retention), holds "full N" or "days D".

backups_dir() { printf '%s/backups\n' "$SERVICE_DIR"; }

# lock_backups: one backup, retention change or restore of the service at a time (fd 9,
# released when the script ends).
lock_backups() {
  local dir
  dir=$(backups_dir)
  mkdir -p -m 0700 "$dir"
  exec 9>"$dir/.lock"
  flock -w 600 9 || fail "another backup of $SERVICE has been running for 10 minutes; try again later"
}

# backup_labels: the labels of the service's backups, oldest first.
backup_labels() {
  local dir
  dir=$(backups_dir)
  [ -d "$dir" ] || return 0
  find "$dir" -maxdepth 1 -type f -name '*.rdb' -printf '%f\n' |
    sed -n 's/^\([0-9]\{8\}-[0-9]\{6\}-[0-9]\{3\}\)\.rdb$/\1/p' | sort
}

# label_time LABEL: the time a backup was taken, in seconds since the epoch.
label_time() {
  date -u -d "${1:0:8} ${1:9:2}:${1:11:2}:${1:13:2}" +%s
}

# label_iso LABEL: 2026-12-02T22:34:55Z.
label_iso() {
  printf '%s-%s-%sT%s:%s:%sZ\n' "${1:0:4}" "${1:4:2}" "${1:6:2}" "${1:9:2}" "${1:11:2}" "${1:13:2}"
}

# persistence FIELD: one field of INFO persistence.
persistence() {
  cli info persistence | sed -n "s/^$1:\([^\r]*\)\r*$/\1/p"
}

wait_no_bgsave() {
  until [ "$(persistence rdb_bgsave_in_progress)" = 0 ]; do
    is_running || fail "Redis for $SERVICE stopped during the backup"
    sleep 0.1
  done
}

# snapshot: have the server write its data to dump.rdb now (BGSAVE: it keeps serving
# meanwhile), and wait until it has. A save already running (Redis' own save rules) is
# waited for first, since it holds older data.
snapshot() {
  local reply tries=50
  while :; do
    wait_no_bgsave
    reply=$(cli bgsave 2>&1)
    case "$reply" in
      "Background saving started"*) break ;;
      *"already in progress"*) ((tries-- > 0)) || fail "BGSAVE of $SERVICE: $reply" ;;
      *) fail "BGSAVE of $SERVICE failed: $reply" ;;
    esac
  done
  wait_no_bgsave
  [ "$(persistence rdb_last_bgsave_status)" = ok ] ||
    fail "the snapshot of $SERVICE failed (see: gokku $GOKKU_PLUGIN_NAME:logs $SERVICE)"
}

# take_backup: a new backup of the running server; prints its label. The caller holds
# lock_backups.
take_backup() {
  local dir label partial
  dir=$(backups_dir)
  find "$dir" -maxdepth 1 -name '.*.partial' -delete
  snapshot
  label=$(date -u +%Y%m%d-%H%M%S-%3N)
  partial="$dir/.$label.partial"
  trap 'rm -f "$partial"' EXIT
  cp -- "$(data_dir)/dump.rdb" "$partial"
  if ! redis-check-rdb "$partial" >/dev/null 2>&1; then
    fail "the snapshot of $SERVICE did not pass redis-check-rdb; no backup was kept"
  fi
  chmod 0600 "$partial"
  sync -- "$partial"
  mv -f -- "$partial" "$dir/$label.rdb"
  sync -- "$dir"
  trap - EXIT
  printf '%s\n' "$label"
}

# apply_retention: remove the backups the retention setting no longer keeps; the newest
# backup is always kept.
apply_retention() {
  local dir kind value label cutoff
  local -a labels
  dir=$(backups_dir)
  [ -f "$dir/.retention" ] || return 0
  read -r kind value <"$dir/.retention"
  mapfile -t labels < <(backup_labels)
  [ "${#labels[@]}" -gt 1 ] || return 0
  unset 'labels[-1]'
  case "$kind" in
    full)
      local drop=$((${#labels[@]} + 1 - value))
      for label in "${labels[@]:0:$((drop > 0 ? drop : 0))}"; do
        rm -f -- "$dir/$label.rdb"
        say "Backup $label of $SERVICE expired (keeping $value)"
      done
      ;;
    days)
      cutoff=$(($(date +%s) - value * 86400))
      for label in "${labels[@]}"; do
        [ "$(label_time "$label")" -lt "$cutoff" ] || continue
        rm -f -- "$dir/$label.rdb"
        say "Backup $label of $SERVICE expired (older than $value days)"
      done
      ;;
  esac
}
