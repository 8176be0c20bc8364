# Off-site backup targets of a postgres service: S3-compatible buckets that pgBackRest
# keeps as further repositories (repo2, repo3...) next to the local one (repo1). The WAL is
# archived into the local repository, then copied to each target in the background
# (ship-wal: a target that does not answer falls behind and catches up later, and never
# stops the service's archiving nor its local backups); every backup is taken into each
# target in turn after the local one (a pgBackRest backup goes to one repository).
#
# One file per target, in a directory of the service only Gokku's user can enter:
#   backup-targets/NAME.env   TARGET_* below, the secret key with them (mode 0600)
# and backup/target-NAME.pem, the certificate authority to trust when one was given.
# The credentials reach pgBackRest through its configuration file (mode 0600, the
# server's user's), never through argv: PostgreSQL's archive_command reads it too.

TARGET_FIELDS="TARGET_REPO TARGET_URL TARGET_BUCKET TARGET_PATH TARGET_HOST TARGET_PORT
TARGET_REGION TARGET_KEY TARGET_SECRET TARGET_CIPHER TARGET_CA"
# pgBackRest numbers repositories 1 to 256; 1 is the local one.
TARGET_REPO_MAX=256
# Seconds without progress before a target's request is given up (pgBackRest retries a
# request for up to about four times that).
TARGET_IO_TIMEOUT=10

targets_dir() { printf '%s/backup-targets\n' "$SERVICE_DIR"; }

# target_names: the service's targets' names, one a line, in repository order.
target_names() {
  local file
  for file in "$(targets_dir)"/*.env; do
    [ -f "$file" ] || continue
    printf '%s %s\n' "$(sed -n 's/^TARGET_REPO=//p' "$file")" "$(basename "$file" .env)"
  done | sort -n | cut -d' ' -f2
}

# load_target NAME: its TARGET_* variables.
load_target() {
  local name
  for name in $TARGET_FIELDS; do printf -v "$name" '%s' ""; done
  # shellcheck source=/dev/null
  source "$(targets_dir)/$1.env"
}

# say_kept_ciphers: after the local repository's encryption changed (to CIPHER_PASS), name
# each target whose copies go on as they were: a target keeps the cipher it was added
# with (pgBackRest cannot change a repository's), and only a new one at another path
# takes the new one.
say_kept_ciphers() {
  local name was
  for name in $(target_names); do
    load_target "$name"
    [ "$TARGET_CIPHER" != "$CIPHER_PASS" ] || continue
    if [ -z "$TARGET_CIPHER" ]; then
      was="unencrypted"
    elif [ -z "$CIPHER_PASS" ]; then
      was="encrypted, with the passphrase it was added with (kept for it)"
    else
      was="encrypted with the passphrase it was added with, not this one"
    fi
    say "Target $name ($TARGET_URL) keeps its copies $was: to change that, remove it and add a target at another path"
  done
}

# save_target NAME: TARGET_* as NAME.env, mode 0600, atomically.
save_target() {
  local dir file tmp name
  dir=$(targets_dir)
  mkdir -p -m 0700 "$dir"
  file="$dir/$1.env"
  tmp=$(umask 077 && mktemp "$file.XXXXXX")
  for name in $TARGET_FIELDS; do
    printf '%s=%q\n' "$name" "${!name}"
  done >"$tmp"
  mv -f "$tmp" "$file"
}

# target_ca_file NAME: where a target's certificate authority is kept: with the backups,
# where pgBackRest (the server's user) reads it. A certificate is no secret.
target_ca_file() { printf '%s/target-%s.pem\n' "$(backup_dir)" "$1"; }

# remove_target NAME: its files; the conf is the caller's to rewrite.
remove_target() {
  local dir
  dir=$(backup_dir)
  rm -f -- "$(targets_dir)/$1.env"
  as_server_user rm -f -- "$(target_ca_file "$1")" "$dir/target-$1.shipped" "$dir/target-$1.failed"
}

# repo_options N CIPHER: the retention (as repo1's: backup.env's) and cipher of repository N.
repo_options() {
  local n="$1" cipher="$2"
  if [ -n "$RETENTION_DAYS" ]; then
    printf 'repo%s-retention-full-type=time\nrepo%s-retention-full=%s\n' "$n" "$n" "$RETENTION_DAYS"
  else
    printf 'repo%s-retention-full-type=count\nrepo%s-retention-full=%s\n' "$n" "$n" \
      "${RETENTION_FULL:-$RETENTION_FULL_ALL}"
  fi
  [ -z "$cipher" ] || printf 'repo%s-cipher-type=aes-256-cbc\nrepo%s-cipher-pass=%s\n' "$n" "$n" "$cipher"
}

# target_conf: the loaded target's repository, as pgbackrest.conf's [global] lines.
# Path-style URIs work with every S3-compatible store; bundling packs the many small files
# of a cluster into a few objects (one request each).
target_conf() {
  local n=$TARGET_REPO
  cat <<EOF
repo$n-type=s3
repo$n-path=$TARGET_PATH
repo$n-s3-bucket=$TARGET_BUCKET
repo$n-s3-endpoint=$TARGET_HOST
repo$n-s3-region=$TARGET_REGION
repo$n-s3-key=$TARGET_KEY
repo$n-s3-key-secret=$TARGET_SECRET
repo$n-s3-uri-style=path
repo$n-bundle=y
EOF
  [ -z "$TARGET_PORT" ] || echo "repo$n-storage-port=$TARGET_PORT"
  [ -z "$TARGET_CA" ] || echo "repo$n-storage-ca-file=$TARGET_CA"
  repo_options "$n" "$TARGET_CIPHER"
}

# targets_conf: every target's lines, for pgbackrest.conf.
targets_conf() {
  local name
  for name in $(target_names); do
    load_target "$name"
    target_conf
  done
}

# export_target_env: the loaded target's options as pgBackRest's environment variables
# (repo2-s3-key is PGBACKREST_REPO2_S3_KEY), for trying a target before it is saved:
# the configuration that PostgreSQL's archive_command reads stays as it is until then,
# and the secret stays out of argv (a process's environment is its user's to read).
export_target_env() {
  local key value
  while IFS='=' read -r key value; do
    key=${key^^}
    export "PGBACKREST_${key//-/_}=$value"
  done < <(target_conf)
}

# repo_names_json: {"1": "local", "N": "TARGET NAME"...}: what backups shows as each
# backup's repository.
repo_names_json() {
  local name json='{"1":"local"}'
  for name in $(target_names); do
    load_target "$name"
    json=$(jq -c --arg n "$TARGET_REPO" --arg name "$name" '. + {($n): $name}' <<<"$json")
  done
  printf '%s\n' "$json"
}

# find_target NAME-OR-URL: the name of the target so named, or whose s3:// URL that is.
find_target() {
  local name
  for name in $(target_names); do
    load_target "$name"
    if [ "$name" = "$1" ] || [ "$TARGET_URL" = "$1" ]; then
      printf '%s\n' "$name"
      return 0
    fi
  done
  return 1
}

# free_repo: the lowest repository number no target has.
free_repo() {
  local n name used=" "
  for name in $(target_names); do
    load_target "$name"
    used+="$TARGET_REPO "
  done
  for ((n = 2; n <= TARGET_REPO_MAX; n++)); do
    [[ "$used" == *" $n "* ]] || {
      echo "$n"
      return 0
    }
  done
  fail "$SERVICE has $((TARGET_REPO_MAX - 1)) targets already: remove one first"
}

# target_answers: the loaded target's endpoint takes a TCP connection within 3 seconds
# (ship-wal asks the same before it pushes there).
target_answers() {
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$TARGET_HOST" "${TARGET_PORT:-443}" 2>/dev/null
}

# ship_wal: the WAL archived so far copied to every target that lacks it, now (after a
# run already at work); fails when a target could not take it.
ship_wal() {
  local dir
  dir=$(backup_dir)
  SHIP_WAL_BLOCK=1 as_server_user "$dir/ship-wal" "$dir" "$SERVICE" "$(pgbackrest_bin)" --wait
}

# mark_shipped NAME: the target has what the local repository has so far (a new target:
# the WAL from before its first backup is of no use there).
mark_shipped() {
  local newest
  newest=$(local_segments | tail -n 1)
  printf '%s\n' "$newest" | as_server_user tee "$(backup_dir)/target-$1.shipped" >/dev/null
}

# local_segments: the WAL segments in the local repository, each once, in order.
local_segments() {
  as_server_user find "$(backup_dir)/repo/archive/$SERVICE" -type f -name '[0-9A-F]*-*' \
    -printf '%f\n' 2>/dev/null | cut -c1-24 | sort -u
}

# target_lag NAME: nothing when the target has every WAL segment of the local repository;
# else how far behind it is, in words: how many segments it lacks and, when the last
# attempt failed, when and why.
target_lag() {
  local dir shipped="" failed="" behind
  dir=$(backup_dir)
  shipped=$(as_server_user cat "$dir/target-$1.shipped" 2>/dev/null) || true
  failed=$(as_server_user cat "$dir/target-$1.failed" 2>/dev/null) || true
  behind=$(local_segments | awk -v shipped="$shipped" '$0 > shipped' | wc -l)
  [ -n "$failed" ] || [ "$behind" -gt 0 ] || return 0
  printf 'target %s lacks %s WAL segment(s) after %s' "$1" "$behind" "${shipped:-the start}"
  if [ -n "$failed" ]; then
    # shellcheck disable=SC2086 # "TIME SEGMENT REASON..."
    set -- $failed
    printf ' (the last push there failed at %s: %s)' "$1" "${*:3}"
  fi
  printf '\n'
}

# backup_to_targets TYPE: the backup just taken locally, taken again into every target
# (incremental and differential ones on each target's own chain: pgBackRest makes the first
# one there full), once the target has the WAL so far. A target that cannot take it is
# named in a warning and skipped: the local backup stands, and the target catches up with
# the WAL when it answers again (its backups with the next backup).
backup_to_targets() {
  local type="$1" name lag
  [ -n "$(target_names)" ] || return 0
  ship_wal >/dev/null 2>&1 || true
  for name in $(target_names); do
    load_target "$name"
    lag=$(target_lag "$name")
    if [[ "$lag" == *"push there failed"* ]]; then
      printf ' !     warning: %s; this backup did not go there\n' "$lag" >&2
      continue
    fi
    say "Backing up $SERVICE ($type) to target $name"
    # Its failure is its one line (backrest_run's); the local backup stands.
    (backrest_run "backup of $SERVICE to target $name" backup --repo="$TARGET_REPO" \
      --type="$type" --io-timeout="$TARGET_IO_TIMEOUT") || true
  done
}
