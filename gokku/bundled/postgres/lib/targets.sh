# Off-site backup targets of a postgres service: S3-compatible buckets that pgBackRest
# keeps as further repositories (repo2, repo3...) next to the local one (repo1). The WAL is
# archived to every repository as it is written (archive-push pushes to all), and every
# backup is taken into each of them in turn (a pgBackRest backup goes to one repository).
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
  rm -f -- "$(targets_dir)/$1.env"
  as_server_user rm -f -- "$(target_ca_file "$1")"
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

# backup_to_targets TYPE: the backup just taken locally, taken again into every target
# (incremental and differential ones on each target's own chain: pgBackRest makes the first
# one there full). Every target is tried; a failed one is named, and the command fails.
backup_to_targets() {
  local type="$1" name status=0
  for name in $(target_names); do
    load_target "$name"
    say "Backing up $SERVICE ($type) to target $name"
    (backrest_run "backup of $SERVICE to target $name" backup --repo="$TARGET_REPO" --type="$type") ||
      status=1
  done
  return "$status"
}
