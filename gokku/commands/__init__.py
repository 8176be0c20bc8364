"""The table of built-in verbs; each module is imported only when its verb runs."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Builtin:
    module: str
    function: str
    usage: str
    summary: str
    hidden: bool = False


def _table(module: str, rows: list[tuple]) -> dict[str, Builtin]:
    return {verb: Builtin(f"gokku.commands.{module}", *rest) for verb, *rest in rows}


BUILTINS: dict[str, Builtin] = {
    **_table(
        "help",
        [
            ("help", "help", "help [PLUGIN]", "Show commands, or one plugin's help"),
            ("version", "version", "version", "Print Gokku's version"),
        ],
    ),
    **_table(
        "plugins",
        [
            (
                "plugins:add",
                "add",
                "plugins:add SOURCE [--name NAME] [--ref REF]",
                "Install a plugin (OWNER/REPO[@REF], URL, git URL, path or official name)",
            ),
            ("plugins:list", "list_", "plugins:list [--format json]", "List installed plugins"),
            (
                "plugins:update",
                "update",
                "plugins:update NAME [--ref REF]",
                "Fetch a plugin again from its recorded source",
            ),
            ("plugins:remove", "remove", "plugins:remove NAME [--force]", "Uninstall a plugin"),
            (
                "plugins:validate",
                "validate",
                "plugins:validate PATH|NAME",
                "Check a plugin against the plugin contract",
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
            ),
            ("services:list", "list_", "services:list [--format json]", "List services"),
            (
                "services:info",
                "info",
                "services:info SVC [ARGS...]",
                "Show a service's information",
            ),
            ("services:logs", "logs", "services:logs SVC [ARGS...]", "Show a service's logs"),
            (
                "services:link",
                "link",
                "services:link SVC -a APP [--env ENV]",
                "Write a service's variables into an app's .env",
            ),
            (
                "services:unlink",
                "unlink",
                "services:unlink SVC -a APP [--env ENV]",
                "Remove a service's variables from an app's .env",
            ),
            (
                "services:destroy",
                "destroy",
                "services:destroy SVC [--force]",
                "Destroy a service and its data",
            ),
            (
                "services:start",
                "start",
                "services:start SVC|--all",
                "Start a service's server, or every service's (at boot)",
            ),
            (
                "services:stop",
                "stop",
                "services:stop SVC|--all",
                "Stop a service's server, or every service's (at shutdown)",
            ),
            (
                "services:config-get",
                "config_get",
                "services:config-get SVC [KEY]",
                "Print a service's config.json, or one key of its config map",
                True,
            ),
            (
                "services:config-set",
                "config_set",
                "services:config-set SVC KEY=VALUE...",
                "Set keys of a service's config map",
                True,
            ),
            (
                "services:env-set",
                "env_set",
                "services:env-set SVC KEY=VALUE...",
                "Set the variables a service gives to the apps it is linked to",
                True,
            ),
            (
                "services:next-port",
                "next_port",
                "services:next-port [START] [--check]",
                "Hand out (and hold) the first free port at or after START",
                True,
            ),
        ],
    ),
    **_table(
        "apps",
        [
            ("apps:create", "create", "apps:create APP", "Create an app"),
            ("apps:list", "list_", "apps:list [--format json]", "List apps"),
            ("apps:destroy", "destroy", "apps:destroy APP [--force]", "Destroy an app"),
        ],
    ),
    **_table(
        "config",
        [
            (
                "config:set",
                "set_",
                "config:set KEY=VALUE... -a APP [--env ENV]",
                "Set app variables",
            ),
            ("config:get", "get", "config:get KEY -a APP [--env ENV]", "Print one variable"),
            (
                "config:list",
                "list_",
                "config:list -a APP [--env ENV] [--format json|shell]",
                "List app variables",
            ),
            (
                "config:unset",
                "unset",
                "config:unset KEY... -a APP [--env ENV]",
                "Remove app variables",
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
                True,
            ),
            (
                "git-upload-pack",
                "upload_pack",
                "git-upload-pack APP",
                "Serve a git fetch or clone of an app's pushed code",
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
                "ssh-keys:add NAME [PATH]",
                "Allow a public key in over SSH (from PATH or stdin)",
            ),
            ("ssh-keys:list", "list_", "ssh-keys:list [--format json]", "List allowed keys"),
            (
                "ssh-keys:remove",
                "remove",
                "ssh-keys:remove NAME | --fingerprint FP",
                "Stop allowing a key",
            ),
        ],
    ),
    **_table(
        "ssh",
        [
            ("whoami", "whoami", "whoami [--format json]", "Show who you are logged in as"),
            (
                "serve",
                "serve",
                "serve [--host HOST] [--port PORT]",
                "Run the embedded SSH server",
            ),
            (
                "ssh-command",
                "ssh_command",
                "ssh-command --key NAME [--root ROOT]",
                "Run $SSH_ORIGINAL_COMMAND for a key (the OpenSSH forced command)",
                True,
            ),
        ],
    ),
}

# Namespaces a plugin may not take: every built-in verb's prefix, and a few reserved ones.
RESERVED_NAMESPACES = {verb.split(":")[0] for verb in BUILTINS} | {
    "plugin",
    "service",
    "app",
    "ssh-keys",
    "serve",
    "ssh-command",
    "git",
    "git-receive-pack",
    "git-upload-pack",
    "whoami",
    "gokku",
}


def usage_line(verb: str) -> str:
    """The usage line a built-in's errors end with: ``gokku VERB ARGS...``."""
    return "gokku " + BUILTINS[verb].usage
