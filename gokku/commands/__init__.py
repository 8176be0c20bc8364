"""The table of built-in verbs; each module is imported only when its verb runs.

Each verb declares what a caller needs (``gokku.access``): ANY, ADMIN, GRANTED (the
command checks the app or service it acts on) or LOCAL (doors and plugin helpers, never
reachable from an SSH identity). The dispatcher enforces it before routing.
"""

from collections.abc import Callable
from typing import NamedTuple

from gokku.access import ADMIN, ANY, GRANTED, LOCAL
from gokku.shapes import APP_USAGES


class Builtin(NamedTuple):
    """A built-in verb: where its function lives, its usage, and who may run it."""

    module: str
    function: str
    usage: str
    summary: str
    access: str
    hidden: bool = False


def _table(module: str, rows: list[tuple]) -> dict[str, Builtin]:
    return {verb: Builtin(f"gokku.commands.{module}", *rest) for verb, *rest in rows}


BUILTINS: dict[str, Builtin] = {
    **_table(
        "help",
        [
            (
                "help",
                "help",
                "help [TOPIC]",
                "Show commands; with a namespace (config), a plugin or a command, its help",
                ANY,
            ),
            ("version", "version", "version", "Print Gokku's version", ANY),
        ],
    ),
    **_table(
        "completion",
        [
            (
                "completion",
                "completion",
                "completion bash|zsh|fish|--words [WORDS...]",
                "Print a shell completion script; --words: what may follow WORDS",
                ANY,
            ),
        ],
    ),
    **_table(
        "plugins",
        [
            (
                "plugins:add",
                "add",
                "plugins:add NAME[@RANGE]|SOURCE [--name NAME] [--ref REF] [--yes] [--force]",
                "Install a plugin and what it requires from the indexes, or from a source "
                "(OWNER/REPO[@REF], URL, git URL, path, official name)",
                ADMIN,
            ),
            (
                "plugins:list",
                "list_",
                "plugins:list [--format json]",
                "List installed plugins",
                ADMIN,
            ),
            (
                "plugins:update",
                "update",
                "plugins:update NAME|--all [--ref REF] [--yes] [--force]",
                "Move index plugins to the newest version their ranges allow (others: fetch again)",
                ADMIN,
            ),
            (
                "plugins:remove",
                "remove",
                "plugins:remove NAME [--force]",
                "Uninstall a plugin",
                ADMIN,
            ),
            (
                "plugins:validate",
                "validate",
                "plugins:validate PATH|NAME",
                "Check a plugin against the plugin contract",
                ADMIN,
            ),
        ],
    ),
    **_table(
        "plugin_settings",
        [
            (
                "plugins:config",
                "config",
                "plugins:config NAME [--format json]",
                "Show a plugin's settings (secrets redacted)",
                ADMIN,
            ),
            (
                "plugins:config:set",
                "config_set",
                "plugins:config:set NAME KEY=VALUE...|--stdin",
                "Set settings a plugin declares (its scripts get GOKKU_CONFIG_KEY)",
                ADMIN,
            ),
            (
                "plugins:config:unset",
                "config_unset",
                "plugins:config:unset NAME KEY...",
                "Unset a plugin's settings (their defaults apply)",
                ADMIN,
            ),
            (
                "plugins:pin",
                "pin",
                "plugins:pin NAME [VERSION|RANGE]",
                "Keep a plugin at a version (the installed one), or updates within a range",
                ADMIN,
            ),
            ("plugins:unpin", "unpin", "plugins:unpin NAME", "Let a plugin be updated", ADMIN),
            (
                "plugins:disable",
                "disable",
                "plugins:disable NAME",
                "Keep a plugin installed but run none of it (services stay as they are)",
                ADMIN,
            ),
            ("plugins:enable", "enable", "plugins:enable NAME", "Enable a plugin again", ADMIN),
            (
                "plugins:install-dependencies",
                "install_dependencies",
                "plugins:install-dependencies NAME",
                "Install the Debian packages a plugin needs (as root, on the server)",
                LOCAL,
            ),
        ],
    ),
    **_table(
        "plugin_index",
        [
            (
                "plugins:index",
                "index_",
                "plugins:index add NAME URL [--default] | list | remove NAME",
                "Plugin indexes; add takes the signers it trusts on stdin (allowed_signers)",
                ADMIN,
            ),
            (
                "plugins:search",
                "search",
                "plugins:search [WORD] [--format json]",
                "Find plugins in the plugin indexes",
                ADMIN,
            ),
            (
                "plugins:info",
                "info",
                "plugins:info NAME [--format json]",
                "Show a plugin's versions in its index: compatibility and requirements",
                ADMIN,
            ),
            (
                "plugins:outdated",
                "outdated",
                "plugins:outdated [--format json]",
                "Plugins with newer versions in their index, within their ranges and at all",
                ADMIN,
            ),
            (
                "plugins:publish",
                "publish",
                "plugins:publish SOURCE[@REF] --index DIR --version X.Y.Z --sign-key KEY "
                "[--name NAME]",
                "Add a version of a plugin to an index directory and sign it (publisher side)",
                LOCAL,
            ),
        ],
    ),
    **_table(
        "plugin_autoupdate",
        [
            (
                "plugins:auto-update",
                "auto_update",
                "plugins:auto-update [on|off|run] [--level patch|minor] [--cooldown HOURS]",
                "Daily updates within pins, ranges and level, to versions out for a cooldown "
                "(48 h); a failed post-update hook rolls back",
                ADMIN,
            ),
        ],
    ),
    **_table(
        "services",
        [
            (
                "services:create",
                "create",
                "services:create PLUGIN[:VERSION] --name SVC",
                "Create a service from a plugin",
                ADMIN,
            ),
            ("services:list", "list_", "services:list [--format json]", "List services", ANY),
            (
                "services:info",
                "info",
                "services:info SVC [ARGS...]",
                "Show a service's information",
                GRANTED,
            ),
            (
                "services:logs",
                "logs",
                "services:logs SVC [ARGS...]",
                "Show a service's logs",
                GRANTED,
            ),
            (
                "services:link",
                "link",
                APP_USAGES["services:link"],
                "Write a service's variables into an app's .env (under NAME_*: --alias)",
                GRANTED,
            ),
            (
                "services:promote",
                "promote",
                APP_USAGES["services:promote"],
                "Make a service linked under an alias the app's primary one (DATABASE_URL...)",
                GRANTED,
            ),
            (
                "services:unlink",
                "unlink",
                APP_USAGES["services:unlink"],
                "Remove a service's variables from an app's .env",
                GRANTED,
            ),
            (
                "services:destroy",
                "destroy",
                "services:destroy SVC [--force]",
                "Destroy a service and its data",
                ADMIN,
            ),
            (
                "services:start",
                "start",
                "services:start SVC|--all",
                "Start a service's server, or every service's (at boot)",
                GRANTED,
            ),
            (
                "services:stop",
                "stop",
                "services:stop SVC|--all",
                "Stop a service's server, or every service's (at shutdown)",
                GRANTED,
            ),
        ],
    ),
    **_table(
        "service_config",
        [
            (
                "services:config-get",
                "config_get",
                "services:config-get SVC [KEY]",
                "Print a service's config.json, or one key of its config map",
                LOCAL,
                True,
            ),
            (
                "services:config-set",
                "config_set",
                "services:config-set SVC KEY=VALUE...|--stdin",
                "Set keys of a service's config map",
                LOCAL,
                True,
            ),
            (
                "services:env-set",
                "env_set",
                "services:env-set SVC KEY=VALUE...|--stdin",
                "Set the variables a service gives to the apps it is linked to",
                LOCAL,
                True,
            ),
            (
                "services:next-port",
                "next_port",
                "services:next-port [START] [--check]",
                "Hand out (and hold) the first free port at or after START",
                LOCAL,
                True,
            ),
        ],
    ),
    **_table(
        "schedules",
        [
            (
                "services:schedule",
                "schedule",
                "services:schedule add SVC CRON [--first-also VERB --first-also-cron CRON] "
                "-- COMMAND... | list SVC [--format json] | remove SVC [ID] | run SVC ID",
                "A service's schedules: gokku commands that cron runs",
                LOCAL,
                True,
            ),
        ],
    ),
    **_table(
        "apps",
        [
            ("apps:create", "create", APP_USAGES["apps:create"], "Create an app", ADMIN),
            ("apps:list", "list_", "apps:list [--format json]", "List apps", ANY),
            ("apps:destroy", "destroy", APP_USAGES["apps:destroy"], "Destroy an app", ADMIN),
            (
                "apps:deploy",
                "deploy",
                APP_USAGES["apps:deploy"],
                "Deploy the deploy branch again, or REV (then the branch points at it)",
                GRANTED,
            ),
            (
                "apps:deploys",
                "deploys_",
                APP_USAGES["apps:deploys"],
                "List the app's last deploys: revision, key, start, duration, result",
                GRANTED,
            ),
            (
                "apps:deploy-log",
                "deploy_log",
                APP_USAGES["apps:deploy-log"],
                "Show the output of the last deploy (or of deploy N)",
                GRANTED,
            ),
            (
                "apps:deploy-set",
                "deploy_set",
                APP_USAGES["apps:deploy-set"],
                "Set the branch that deploys, or how long a deploy waits for the one before",
                GRANTED,
            ),
        ],
    ),
    **_table(
        "config",
        [
            (
                "config:set",
                "set_",
                APP_USAGES["config:set"],
                "Set app variables (--encoded: values in base64)",
                GRANTED,
            ),
            (
                "config:get",
                "get",
                APP_USAGES["config:get"],
                "Print one variable",
                GRANTED,
            ),
            (
                "config:list",
                "list_",
                APP_USAGES["config:list"],
                "List app variables",
                GRANTED,
            ),
            (
                "config:show",
                "show",
                APP_USAGES["config:show"],
                "List app variables (config:list)",
                GRANTED,
            ),
            (
                "config:export",
                "export",
                APP_USAGES["config:export"],
                "Print app variables as shell export lines",
                GRANTED,
            ),
            (
                "config:import",
                "import_",
                APP_USAGES["config:import"],
                "Set every variable of a .env file read from stdin",
                GRANTED,
            ),
            (
                "config:unset",
                "unset",
                APP_USAGES["config:unset"],
                "Remove app variables",
                GRANTED,
            ),
        ],
    ),
    **_table(
        "git",
        [
            (
                "git-receive-pack",
                "receive_pack",
                "git-receive-pack APP",
                "Receive a git push (git push gokku@HOST:APP BRANCH)",
                GRANTED,
                True,
            ),
            (
                "git-hook",
                "hook",
                "git-hook pre-receive|post-receive APP",
                "Run an app's deploy triggers from its repository's git hooks",
                LOCAL,
                True,
            ),
            (
                "git-upload-pack",
                "upload_pack",
                "git-upload-pack APP",
                "Serve a git fetch or clone of an app's pushed code",
                GRANTED,
                True,
            ),
        ],
    ),
    **_table(
        "keys",
        [
            (
                "ssh-keys:add",
                "add",
                "ssh-keys:add NAME [PATH] [--role admin|member]",
                "Allow a public key in over SSH (stdin; PATH on the server only)",
                ADMIN,
            ),
            ("ssh-keys:list", "list_", "ssh-keys:list [--format json]", "List allowed keys", ADMIN),
            (
                "ssh-keys:remove",
                "remove",
                "ssh-keys:remove NAME | --fingerprint FP",
                "Stop allowing a key",
                ADMIN,
            ),
        ],
    ),
    **_table(
        "access",
        [
            (
                "access:grant",
                "grant",
                "access:grant KEY app:APP|service:SVC [--read]",
                "Let a member key write (or only read) an app or a service",
                ADMIN,
            ),
            (
                "access:revoke",
                "revoke",
                "access:revoke KEY app:APP|service:SVC",
                "Take a grant away",
                ADMIN,
            ),
            (
                "access:list",
                "list_",
                "access:list [KEY] [--format json]",
                "Show keys' roles and grants",
                ADMIN,
            ),
        ],
    ),
    **_table(
        "doctor",
        [
            (
                "doctor",
                "doctor",
                "doctor [--fix]",
                "Check the state for what interrupted commands left; --fix repairs it",
                ADMIN,
            ),
        ],
    ),
    **_table(
        "sandbox",
        [
            (
                "sandbox-run",
                "run",
                "sandbox-run APP [--] COMMAND [ARGS...]",
                "Run an app's code in its sandbox (the run_in_sandbox helper)",
                LOCAL,
                True,
            ),
            (
                "sandbox-client",
                "client",
                "sandbox-client [--trusted] VAR... -- COMMAND [ARGS...] | [--trusted] --check",
                "Run a client a person drives in a sandbox (the run_client_in_sandbox helper)",
                LOCAL,
                True,
            ),
        ],
    ),
    **_table(
        "ssh",
        [
            ("whoami", "whoami", "whoami [--format json]", "Show who you are logged in as", ANY),
            (
                "serve",
                "serve",
                "serve [--host HOST] [--port PORT]",
                "Run the embedded SSH server",
                LOCAL,
            ),
            (
                "ssh-command",
                "ssh_command",
                "ssh-command --fingerprint FP [--root ROOT]",
                "Run $SSH_ORIGINAL_COMMAND for a key (the OpenSSH forced command)",
                LOCAL,
                True,
            ),
        ],
    ),
}

# Dokku's service-plugin forms, for every installed plugin that has no script of that name
# (a plugin's own ``commands/destroy`` still runs as ``PLUGIN:destroy``): each is the
# services verb it names, through the same function, with that verb's access.
# ``PLUGIN:info SVC`` needs no form: the plugin contract requires ``commands/info``.
PLUGIN_FORMS: dict[str, Builtin] = _table(
    "services",
    [
        (
            "create",
            "create_form",
            "PLUGIN:create SVC [VERSION]",
            "Create a service (services:create PLUGIN[:VERSION] --name SVC)",
            ADMIN,
        ),
        (
            "destroy",
            "destroy_form",
            "PLUGIN:destroy SVC [--force]",
            "Destroy a service and its data (services:destroy)",
            ADMIN,
        ),
        (
            "link",
            "link_form",
            "PLUGIN:link SVC APP [--alias NAME] [--env ENV]",
            "Write a service's variables into an app's .env (services:link)",
            GRANTED,
        ),
        (
            "promote",
            "promote_form",
            "PLUGIN:promote SVC APP [--env ENV]",
            "Make a service linked under an alias the app's primary one (services:promote)",
            GRANTED,
        ),
        (
            "unlink",
            "unlink_form",
            "PLUGIN:unlink SVC APP [--env ENV]",
            "Remove a service's variables from an app's .env (services:unlink)",
            GRANTED,
        ),
        (
            "list",
            "list_form",
            "PLUGIN:list [--format json]",
            "List the plugin's services (services:list)",
            ANY,
        ),
    ],
)
# Dokku's questions about a plugin's services, answered for the caller (service_links).
PLUGIN_FORMS |= _table(
    "service_links",
    [
        (
            "exists",
            "exists_form",
            "PLUGIN:exists SVC",
            "Whether the plugin has that service (exit 0 or 1)",
            GRANTED,
        ),
        (
            "links",
            "links_form",
            "PLUGIN:links SVC",
            "The apps linked to a service, one a line",
            GRANTED,
        ),
        (
            "linked",
            "linked_form",
            "PLUGIN:linked SVC APP",
            "Whether a service is linked to an app (exit 0 or 1)",
            GRANTED,
        ),
        (
            "app-links",
            "app_links_form",
            "PLUGIN:app-links APP",
            "The plugin's services linked to an app, one a line",
            GRANTED,
        ),
    ],
)

# Verbs the server's CLI runs as root when root calls (not as the state's owner, as every
# other verb): they install system packages and write nothing under GOKKU_ROOT.
KEEPS_ROOT = {"plugins:install-dependencies"}

# Namespaces a plugin may not take: every built-in verb's prefix, and a few reserved ones.
RESERVED_NAMESPACES = {verb.split(":")[0] for verb in BUILTINS} | {
    "plugin",
    "service",
    "app",
    "ssh-keys",
    "access",
    "serve",
    "ssh-command",
    "git",
    "git-receive-pack",
    "git-upload-pack",
    "git-hook",
    "whoami",
    "gokku",
}


# The built-in namespaces (``config`` of ``config:set``...): each has ``help NAMESPACE``.
NAMESPACES = sorted({verb.split(":")[0] for verb, b in BUILTINS.items() if ":" in verb})


def namespace_verbs(namespace: str) -> list[str]:
    """The visible built-in verbs of ``namespace``, in table order."""
    return [v for v, b in BUILTINS.items() if v.startswith(namespace + ":") and not b.hidden]


def plugin_commands(plugin) -> list[str]:
    """What ``PLUGIN:CMD`` can name: the plugin's scripts and Dokku's forms."""
    return sorted({*plugin.commands(), *PLUGIN_FORMS})


def asks_help(args: list[str]) -> bool:
    """``--help``/``-h`` among a built-in's options (not after ``--``)."""
    options = args[: args.index("--")] if "--" in args else args
    return "--help" in options or "-h" in options


def usage_line(verb: str) -> str:
    """The usage line a built-in's errors end with: ``gokku VERB ARGS...``."""
    return "gokku " + BUILTINS[verb].usage


def form_usage(verb: str) -> str:
    """The usage line of a Dokku form as typed: ``gokku pg:link SVC APP [--env ENV]``."""
    namespace, _, command = verb.partition(":")
    return "gokku " + PLUGIN_FORMS[command].usage.replace("PLUGIN", namespace, 1)


APP_VALUES = {"-a": "app", "--app": "app"}


def take_app(ctx, opts, usage: str, app_word: Callable[[str], bool] = lambda word: True) -> str:
    """The app a verb of ``[-a] APP`` acts on: ``-a APP`` after the verb, else before it,
    and in Dokku's form the first word (taken from ``opts.positional``). With ``-a`` too
    (the client adds it from the git remote) a first word that repeats that name is still
    the app; another one is the verb's next argument (``-a api apps:deploy REV``)."""
    from gokku.errors import UsageError
    from gokku.names import check_name

    app = opts.get("app", ctx.app)
    first = opts.positional[0] if opts.positional else None
    if first is not None and app in (None, first) and app_word(first):
        app = opts.positional.pop(0)
    if not app:
        raise UsageError(f"missing -a APP; usage: {usage}")
    return check_name("app", app)


def read_assignments(ctx, opts, words: list[str], usage: str, check) -> dict[str, str]:
    """``KEY=VALUE`` words, or with ``--stdin`` NUL-terminated records on stdin (one of
    the two: values from both would make it unclear which one wins)."""
    from gokku.cmdline import assignments, stdin_assignments
    from gokku.errors import UsageError

    if not opts.flag("stdin"):
        if not words:
            raise UsageError(f"missing argument (KEY=VALUE); usage: {usage}")
        return assignments(words, usage, check)
    if words:
        raise UsageError(f"give KEY=VALUE words or --stdin, not both; usage: {usage}")
    return stdin_assignments(ctx.request.stdin, usage, check)
