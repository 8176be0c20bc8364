# What the postgres plugin's scripts share: one PostgreSQL server per service, run from
# the distribution's binaries (/usr/lib/postgresql/VERSION/bin), listening on 127.0.0.1
# only, with its cluster in the service's data/ directory.
#
# Settings saved by install (settings.env): SERVER_USER, PG_VERSION, PG_BIN, PORT,
# DB_NAME, DB_USER and PASSWORD (the apps' role, the one linked apps get), SUPERUSER and
# SUPERUSER_PASSWORD (Gokku's own, never given to an app). A service made before apps got
# a role of their own has no SUPERUSER: its DB_USER is the superuser (see app-role).

PG_SERVER_USER=postgres
# Next to the usual port, which the distribution's own cluster may take at boot.
PG_FIRST_PORT=5433
PG_LIB=/usr/lib/postgresql
# When the first backup schedule is added: a weekly verify (Sunday, 05:00), after the night's backups.
PG_VERIFY_CRON='0 5 * * 0'

# WAL archiving and backups (pgBackRest): prepare_archiving runs at every start.
source "$(dirname "${BASH_SOURCE[0]}")/backup.sh"
# Off-site targets: further pgBackRest repositories in S3-compatible buckets.
source "$(dirname "${BASH_SOURCE[0]}")/targets.sh"

data_dir() { printf '%s/data\n' "$SERVICE_DIR"; }
log_file() { printf '%s/logs/postgresql.log\n' "$SERVICE_DIR"; }

# dsn: how clients reach the database (what DATABASE_URL is set to on link).
dsn() {
  printf 'postgres://%s:%s@127.0.0.1:%s/%s\n' "$DB_USER" "$PASSWORD" "$PORT" "$DB_NAME"
}

# ---- Roles ------------------------------------------------------------------------------
# The server runs as Gokku's account (or the postgres user's, under root), so a superuser's
# SQL reaches that account: COPY ... TO PROGRAM runs a shell command there. Apps, and the
# members who connect, import and export, get a role that owns the service's database and
# everything in it, and is no superuser; only Gokku's own plumbing (backups, restores)
# connects as the superuser.
APP_ROLE=app

# superuser_name: the cluster's superuser, whose password SUPERUSER_PASSWORD holds (for a
# service made before app roles: DB_USER, with PASSWORD).
superuser_name() {
  printf '%s\n' "${SUPERUSER:-$DB_USER}"
}

# use_role USER PASSWORD: point libpq's variables at this service as USER, for psql,
# pg_dump, pg_restore and pgBackRest. The password travels in the environment, never on
# a command line that `ps` shows.
use_role() {
  export PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER="$1" PGPASSWORD="$2"
  export PGDATABASE="$DB_NAME" PGCONNECT_TIMEOUT=10 PGAPPNAME="gokku-$GOKKU_PLUGIN_NAME"
}

# caller_psql ARGS...: psql as the person calling drives it (pg:connect, a SQL file's import):
# its \! runs shell commands and \copy, \o and \i reach files, so it runs in the sandbox
# (run_client_in_sandbox), with the connection use_role set and its terminal's settings.
caller_psql() {
  run_client_in_sandbox PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE PGCONNECT_TIMEOUT \
    PGAPPNAME TERM LANG LC_ALL COLUMNS LINES -- "$PG_BIN/psql" "$@"
}

# use_app_role: as the role linked apps get; use_superuser: as Gokku's superuser.
use_app_role() {
  use_role "$DB_USER" "$PASSWORD"
}
use_superuser() {
  use_role "$(superuser_name)" "${SUPERUSER_PASSWORD:-$PASSWORD}"
}

# choose_role [--superuser]: connect (use_role) as the apps' role, or with --superuser
# (admins only) as the superuser; AS_SUPERUSER says which (1 or empty).
choose_role() {
  AS_SUPERUSER=""
  if [ "${1:-}" != --superuser ]; then
    use_app_role
    return
  fi
  [ "${GOKKU_ROLE:-}" = admin ] ||
    fail "--superuser runs SQL that reaches the server's account: admins only"
  AS_SUPERUSER=1
  use_superuser
}

# app_role_sql: SQL, run by the superuser connected to the service's database, that makes
# the apps' role what it must be whatever the cluster held before (a fresh one, one from a
# backup taken before app roles, a role of that name made by hand): able to log in with
# PASSWORD and make databases, no superuser and no other role's rights (memberships
# revoked: pg_execute_server_program would give COPY ... TO PROGRAM back), owner of the
# database and of what the superuser owns in it outside the system's schemas, save the
# objects of extensions (the app could not change those anyway).
app_role_sql() {
  cat <<SQL
do \$\$ begin
  if not exists (select from pg_roles where rolname = '$DB_USER') then
    create role "$DB_USER";
  end if;
end \$\$;
alter role "$DB_USER" with login nosuperuser nocreaterole createdb noreplication nobypassrls
  inherit connection limit -1 password '$PASSWORD';
do \$\$
declare
  r record;
  su oid := (select oid from pg_roles where rolname = '$(superuser_name)');
  app name := '$DB_USER';
  mine text := 'n.nspname not in (''pg_catalog'', ''information_schema'') and n.nspname not like ''pg\_%''';
begin
  for r in select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid
           where m.member = (select oid from pg_roles where rolname = app) loop
    execute format('revoke %I from %I', r.rolname, app);
  end loop;
  execute format('alter database %I owner to %I', current_database(), app);
  for r in execute 'select n.nspname from pg_namespace n where n.nspowner = \$1 and ' || mine
           using su loop
    execute format('alter schema %I owner to %I', r.nspname, app);
  end loop;
  -- Tables before sequences: a table's new owner takes the sequences it owns along.
  for r in execute 'select c.oid from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where c.relowner = \$1 and c.relkind in (''r'', ''p'', ''v'', ''m'', ''f'', ''S'') and '
           || mine || ' and not exists (select from pg_depend d where d.classid = ''pg_class''::regclass
           and d.objid = c.oid and d.deptype = ''e'') order by c.relkind = ''S''' using su loop
    if (select relowner from pg_class where oid = r.oid) = su then
      execute format('alter table %s owner to %I', r.oid::regclass, app);
    end if;
  end loop;
  for r in execute 'select p.oid from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where p.proowner = \$1 and ' || mine || ' and not exists (select from pg_depend d
           where d.classid = ''pg_proc''::regclass and d.objid = p.oid and d.deptype = ''e'')'
           using su loop
    execute format('alter routine %s owner to %I', r.oid::regprocedure, app);
  end loop;
  for r in execute 'select t.oid from pg_type t join pg_namespace n on n.oid = t.typnamespace
           left join pg_class c on c.oid = t.typrelid
           where t.typowner = \$1 and t.typtype in (''c'', ''d'', ''e'', ''r'', ''m'')
           and (t.typrelid = 0 or c.relkind = ''c'') and ' || mine || ' and not exists
           (select from pg_depend d where d.classid = ''pg_type''::regclass and d.objid = t.oid
           and d.deptype = ''e'')' using su loop
    if (select typowner from pg_type where oid = r.oid) = su then
      execute format('alter type %s owner to %I', r.oid::regtype, app);
    end if;
  end loop;
  for r in select oid from pg_largeobject_metadata where lomowner = su loop
    execute format('alter large object %s owner to %I', r.oid, app);
  end loop;
end \$\$;
SQL
}

# postmaster_pid: the server's pid when it runs.
postmaster_pid() {
  server_pid "$(data_dir)/postmaster.pid" postgres
}

is_running() {
  postmaster_pid >/dev/null
}

require_running() {
  is_running || fail "service '$SERVICE' is stopped; start it with: gokku $GOKKU_PLUGIN_NAME:start $SERVICE"
}

# write_server_conf: what Gokku decides about the server, in a file of its own that
# postgresql.conf includes, so the rest of postgresql.conf stays the distribution's.
# No Unix socket: every client, Gokku's included, comes in over TCP with the password.
write_server_conf() {
  local conf
  conf="$(data_dir)/gokku.conf"
  as_server_user tee "$conf" >/dev/null <<EOF
# Written by Gokku's $GOKKU_PLUGIN_NAME plugin for service $SERVICE; rewritten by it.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = ''
EOF
}

# start_server: start the server and wait until it accepts connections. On failure it
# shows why and returns 3 when the port was taken by someone else (install then tries
# another one), 1 otherwise.
start_server() {
  local log offset
  if is_running; then
    say "PostgreSQL for $SERVICE is already running on port $PORT"
    return 0
  fi
  prepare_archiving
  log=$(log_file)
  offset=$(log_size "$log")
  # pg_ctl starts the server in a session of its own: it outlives this script and is
  # not hung up with it.
  if as_server_user "$PG_BIN/pg_ctl" start -D "$(data_dir)" -l "$log" -w -t 120 -s; then
    rm -f -- "$SERVICE_DIR/paused"
    say "PostgreSQL $PG_VERSION for $SERVICE running on 127.0.0.1:$PORT"
    return 0
  fi
  log_since "$log" "$offset" | tail -n 20 >&2
  if log_since "$log" "$offset" | grep -q 'Address already in use'; then
    return 3
  fi
  printf ' !     PostgreSQL for %s did not start (see: gokku %s:logs %s)\n' \
    "$SERVICE" "$GOKKU_PLUGIN_NAME" "$SERVICE" >&2
  return 1
}

# stop_server: a fast shutdown (clients are disconnected, everything is written out);
# when that does not finish, an immediate one; when even that fails, KILL.
stop_server() {
  local pid
  pid=$(postmaster_pid) || {
    say "PostgreSQL for $SERVICE is not running"
    return 0
  }
  as_server_user "$PG_BIN/pg_ctl" stop -D "$(data_dir)" -m fast -w -t 60 -s ||
    as_server_user "$PG_BIN/pg_ctl" stop -D "$(data_dir)" -m immediate -w -t 30 -s ||
    kill -KILL "$pid" 2>/dev/null || true
  wait_gone "$pid" 30 || fail "PostgreSQL for $SERVICE (pid $pid) does not stop"
  # The server archives its last segment as it stops: the targets get it now too.
  [ -z "$(target_names)" ] || ship_wal >/dev/null 2>&1 || true
  say "PostgreSQL for $SERVICE stopped"
}

# ---- Exposure beyond loopback (expose, unexpose) -----------------------------------------
# Exposed, the server listens on every address with TLS on; pg_hba.conf lets connections
# from beyond loopback in only over TLS and with scram-sha-256 (a marked block of its own,
# after initdb's loopback lines: a plain connection from elsewhere matches no line). The
# settings live in a file of their own that postgresql.conf includes.

EXPOSED_CONF=gokku-exposed.conf
HBA_BEGIN='# gokku: exposed beyond loopback, TLS only (begin)'
HBA_END='# gokku: exposed (end)'

tls_dir() { printf '%s/tls\n' "$SERVICE_DIR"; }

is_exposed() {
  [ -s "$(data_dir)/$EXPOSED_CONF" ]
}

# expose_files: write the settings and the pg_hba.conf lines (read when the server starts).
expose_files() {
  local data tls
  data=$(data_dir)
  tls=$(tls_dir)
  as_server_user tee "$data/$EXPOSED_CONF" >/dev/null <<EOF
# Written by Gokku's $GOKKU_PLUGIN_NAME:expose for service $SERVICE; removed by unexpose.
listen_addresses = '*'
ssl = on
ssl_cert_file = '$tls/server.crt'
ssl_key_file = '$tls/server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
EOF
  grep -qxF "include_if_exists '$EXPOSED_CONF'" "$data/postgresql.conf" ||
    printf "include_if_exists '%s'\n" "$EXPOSED_CONF" |
    as_server_user tee -a "$data/postgresql.conf" >/dev/null
  printf '%s\n' "$HBA_BEGIN" "hostssl all all 0.0.0.0/0 scram-sha-256" \
    "hostssl all all ::/0 scram-sha-256" "$HBA_END" |
    as_server_user tee -a "$data/pg_hba.conf" >/dev/null
}

# unexpose_files: back to loopback only (from the next start on). The settings file is
# left empty, not removed: the server would log a missing one at every start.
unexpose_files() {
  local data
  data=$(data_dir)
  : | as_server_user tee "$data/$EXPOSED_CONF" >/dev/null
  as_server_user sed -i "\|^$HBA_BEGIN\$|,\|^$HBA_END\$|d" "$data/pg_hba.conf"
}

# ---- info SERVICE --FIELD -------------------------------------------------------------
# info_value FIELD: one of show_info_flag's fields (the helpers'), for this plugin.
info_value() {
  case "$1" in
    config-dir | data-dir) data_dir ;;
    dsn) dsn ;;
    exposed-ports) if is_exposed; then echo "$PORT"; else echo -; fi ;;
    internal-ip) echo 127.0.0.1 ;;
    links) echo "${GOKKU_LINKED_APPS:--}" ;;
    service-root) echo "$SERVICE_DIR" ;;
    status) service_state ;;
    version) "$PG_BIN/postgres" --version | sed -n 's/.*(PostgreSQL) \([^ ]*\).*/\1/p' ;;
  esac
}
