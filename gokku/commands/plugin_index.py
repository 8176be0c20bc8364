"""``plugins:index``, ``plugins:search``, ``plugins:info``, ``plugins:publish``, and
``plugins:add NAME[@RANGE]`` through the indexes (``gokku.plugins.index``)."""

import re
from pathlib import Path

from gokku import confirm
from gokku.cmdline import parse
from gokku.commands import usage_line
from gokku.context import Context
from gokku.errors import GokkuError, NotFound, UsageError
from gokku.names import check_name, is_name
from gokku.plugins import index, install, plan, registry, semver

FORMAT = {"--format": "format"}
_REQUEST = re.compile(r"^([a-z0-9][a-z0-9-]{0,62})(?:@(.+))?$")


def index_(ctx: Context, args: list[str]) -> int:
    """``plugins:index add NAME URL [--default] < allowed_signers``, ``list``, ``remove NAME``."""
    usage = usage_line("plugins:index")
    opts = parse(args, usage, values=FORMAT, flags={"--default": "default"}, min_args=1, max_args=3)
    action, *rest = opts.positional
    shapes = {"add": 2, "list": 0, "remove": 1}
    if action not in shapes or len(rest) != shapes[action]:
        raise UsageError(f"plugins:index takes add NAME URL, list or remove NAME; usage: {usage}")
    if action == "add":
        signers = ctx.request.stdin.read(index.MAX_FILE).decode("utf-8", "replace")
        over_ssh = ctx.request.identity.over_ssh
        added = index.add(ctx.root, rest[0], rest[1], signers, opts.flag("default"), over_ssh)
        ctx.info(f"Plugin index {added.name} added ({added.kind}: {added.url})")
    elif action == "remove":
        index.remove(ctx.root, check_name("index", rest[0]))
        ctx.info(f"Plugin index {rest[0]} removed")
    else:
        records = [
            {"name": i.name, "url": i.url, "kind": i.kind, "default": i.default}
            for i in index.all_indexes(ctx.root)
        ]
        ctx.listing(
            opts.get("format", ctx.format),
            records,
            "No plugin indexes (add one: gokku plugins:index add NAME URL < allowed_signers)",
            ["NAME", "URL", "DEFAULT"],
            lambda r: [r["name"], r["url"], "yes" if r["default"] else ""],
        )
    return 0


def search(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("plugins:search"), values=FORMAT, max_args=1)
    word = (opts.positional or [""])[0].lower()
    records = []
    for source in index.all_indexes(ctx.root):
        for name, description in sorted(source.catalog().items()):
            if word in name.lower() or word in description.lower():
                records.append({"name": name, "index": source.name, "description": description})
    ctx.listing(
        opts.get("format", ctx.format),
        records,
        f"No plugin matches {word!r}" if word else "No plugins in any index",
        ["NAME", "INDEX", "DESCRIPTION"],
        lambda r: [r["name"], r["index"], r["description"]],
    )
    return 0


def info(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("plugins:info"), values=FORMAT, min_args=1, max_args=1)
    name = check_name("plugin", opts.positional[0])
    found = index.find(ctx.root, name)
    if found is None:
        raise NotFound(f"no plugin index has {name!r} (see: gokku plugins:search)")
    source, manifest = found
    from gokku import __version__

    versions = []
    for number in sorted(manifest["versions"], key=semver.Version.parse, reverse=True):
        entry = manifest["versions"][number]
        works = semver.allows(entry.get("gokku") or "*", __version__)
        versions.append(
            {
                "version": number,
                "gokku": entry.get("gokku") or "*",
                "compatible": works,
                "requires": entry.get("requires") or {},
                "published": entry.get("published") or "",
                "sha256": entry.get("sha256"),
                "commit": entry.get("commit"),
            }
        )
    if opts.get("format", ctx.format) == "json":
        ctx.out_json(
            {
                **{k: manifest.get(k) for k in ("name", "description", "source")},
                "index": source.name,
                "versions": versions,
            }
        )
        return 0
    ctx.out(f"{name}: {manifest.get('description') or ''}".rstrip())
    ctx.out(f"index {source.name}, source {manifest.get('source') or '?'}")
    ctx.table(
        ["VERSION", "GOKKU", "COMPATIBLE", "REQUIRES", "PUBLISHED"],
        [
            [
                v["version"],
                v["gokku"],
                "yes" if v["compatible"] else f"no (this is {__version__})",
                ", ".join(f"{k} {r}" for k, r in v["requires"].items()) or "-",
                v["published"],
            ]
            for v in versions
        ],
    )
    return 0


def publish(ctx: Context, args: list[str]) -> int:
    opts = parse(
        args,
        usage_line("plugins:publish"),
        values={"--index": "index", "--version": "version", "--sign-key": "key", "--name": "name"},
        min_args=1,
        max_args=1,
    )
    missing = [
        f"--{k.replace('key', 'sign-key')}" for k in ("index", "version", "key") if not opts.get(k)
    ]
    if missing:
        raise UsageError(
            f"plugins:publish needs {', '.join(missing)}; usage: {usage_line('plugins:publish')}"
        )
    from gokku.plugins import publish as publishing
    from gokku.plugins import signing

    text = opts.positional[0]
    folder = Path(str(opts.get("index")))
    key = signing.private_key(str(opts.get("key")))
    entry = publishing.publish(text, folder, str(opts.get("version")), key, opts.get("name"))
    ctx.info(
        f"Published {opts.get('version')} to {folder} (sha256 {entry.get('sha256') or '-'}, "
        f"commit {entry.get('commit') or '-'}), signed with {key}"
    )
    return 0


def request(ctx: Context, text: str) -> tuple[str, str] | None:
    """``NAME[@VERSION|@RANGE]`` when an index is meant: the name is in an index, or a
    version is asked for. None: the text is a source (OWNER/REPO, a URL, a bundled name)."""
    match = _REQUEST.match(text)
    if not match or not is_name(match[1]) or not index.all_indexes(ctx.root):
        return None
    if match[2] is None and index.find(ctx.root, match[1]) is None:
        return None
    semver.Range.parse(match[2] or "*")
    return match[1], match[2] or "*"


def installed_versions(ctx: Context) -> dict[str, plan.Installed]:
    return {
        p.name: plan.Installed(str(p.record.get("version") or ""), _requires(p))
        for p in registry.installed(ctx.root)
    }


def index_lookup(ctx: Context) -> plan.Lookup:
    """A plugin's manifest, from the index it was installed from when it was (else the
    first that has it), each read once per command."""
    origins = {p.name: p.record.get("index") for p in registry.installed(ctx.root)}
    indexes = index.all_indexes(ctx.root)  # a git index is fetched once, not per plugin
    cache: dict[str, tuple[index.Index, dict] | None] = {}

    def lookup(plugin: str) -> tuple[index.Index, dict] | None:
        if plugin not in cache:
            origin = next((i for i in indexes if i.name == origins.get(plugin)), None)
            if origins.get(plugin) and origin is None:
                raise NotFound(f"plugin {plugin} came from index {origins[plugin]}, now removed")
            cache[plugin] = index.find(ctx.root, plugin, [origin] if origin else indexes)
        return cache[plugin]

    return lookup


def add(ctx: Context, name: str, wanted: str, yes: bool, force: bool) -> None:
    """Resolve ``name`` at ``wanted`` with what it requires, show the plan, install it all."""
    installed = installed_versions(ctx)
    lookup = index_lookup(ctx)
    if lookup(name) is None:
        raise NotFound(f"no plugin index has {name!r} (see: gokku plugins:search)")
    steps = plan.Resolver(installed, lookup).resolve({name: wanted})
    if not steps:
        ctx.info(f"Plugin {name} {installed[name].version} is already installed")
        return
    _run(ctx, f"plugins:add {name}", steps, yes, force, ask=True)


def update(ctx: Context, names: list[str], yes: bool, force: bool) -> None:
    """Move index plugins (``names``, or all of them) to the newest versions the ranges
    and pins on them allow; what they then require comes along. A plugin pinned at a
    version stays, and so does one pinned at a range no version meets (said, not fatal
    to the others)."""
    plugins = [p for p in registry.installed(ctx.root) if p.record.get("index")]
    installed, lookup = installed_versions(ctx), index_lookup(ctx)
    pins = Pins(pinned(plugins), installed, lookup)
    frozen = sorted(p.name for p in plugins if p.settings.frozen)
    for name in names:
        if name in frozen:
            raise GokkuError(
                f"plugin {name!r} is pinned at {pins.pins[name]}; unpin it first: "
                f"gokku plugins:unpin {name}"
            )
        if name in pins.stuck:
            stays_at = installed[name].version
            raise GokkuError(f"plugin {name!r} stays at {stays_at}: {pins.stuck[name]}")
    for name in [] if names else sorted(pins.stuck):
        ctx.warn(f"{name} stays at {installed[name].version}: {pins.stuck[name]}")
    stays = set(frozen) | set(pins.stuck)
    targets = names or [p.name for p in plugins if p.name not in stays]
    resolver = plan.Resolver(installed, lookup, upgrade=frozenset(targets))
    steps = resolver.resolve(pins.asked(targets))
    if not steps:
        said = (
            f"{', '.join(targets)}: up to date" if targets else "No plugin from an index to update"
        )
        held = f" ({', '.join(frozen)}: pinned at a version)" if frozen and not names else ""
        ctx.info(said + held)
        return
    what = f"plugins:update {' '.join(names) or '--all'} does more than update those"
    _run(ctx, what, steps, yes, force, ask=not all(step.name in targets for step in steps))


def pinned(plugins: list[registry.Plugin]) -> dict[str, str]:
    """Each pinned plugin's pin: a version (a freeze) or a range it moves within."""
    return {p.name: p.settings.pin for p in plugins if p.settings.pin}


class Pins:
    """The pins a plan must keep. A pin that neither the installed version nor any version
    the indexes offer meets (``~3.0`` while they top out at 1.1) is *stuck*: its plugin
    stays where it is, and plans for the others go on rather than fail on it."""

    def __init__(
        self, pins: dict[str, str], installed: dict[str, plan.Installed], lookup: plan.Lookup
    ) -> None:
        self.pins = pins
        self.installed = installed
        self.stuck: dict[str, str] = {}  # name: why no version meets the pin
        for name, pin in pins.items():
            if name in installed and _meets(installed[name].version, pin):
                continue
            try:
                plan.Resolver(installed, lookup, upgrade=frozenset({name})).resolve({name: pin})
            except GokkuError as exc:
                self.stuck[name] = f"no version meets its pin {pin} ({exc.message})"

    def asked(self, targets: list[str]) -> dict[str, str]:
        """The ranges a plan for updating ``targets`` asks for: each pinned plugin within
        its pin (a stuck one at its version), and the targets not pinned at any version."""
        kept = {n: p for n, p in self.pins.items() if n not in self.stuck}
        stay = {n: self.installed[n].version for n in self.stuck if n in self.installed}
        return {name: "*" for name in targets} | kept | stay


def _meets(version: str, pin: str) -> bool:
    try:
        return semver.allows(pin, version)
    except GokkuError:  # an installed plugin without a version meets no pin
        return False


def _run(
    ctx: Context, what: str, steps: list[plan.Step], yes: bool, force: bool, ask: bool
) -> None:
    """Show the plan; when ``ask``, install it only once confirmed (on a terminal, or
    ``--yes``). ``what`` says which command's plan, in the refusal without either."""
    ctx.info("Plan: " + "; ".join(step.describe() for step in steps))
    if ask:
        confirm.proceed(ctx, what, yes)
    install.apply(ctx, steps, force)


def outdated(ctx: Context, args: list[str]) -> int:
    """Index plugins with a newer version: the newest the ranges allow, the newest at all."""
    opts = parse(args, usage_line("plugins:outdated"), values=FORMAT, max_args=0)
    installed = installed_versions(ctx)
    lookup = index_lookup(ctx)
    plugins = [p for p in registry.installed(ctx.root) if p.record.get("index")]
    pins = Pins(pinned(plugins), installed, lookup)
    records = []
    for plugin in plugins:
        found = lookup(plugin.name)
        if found is None:
            continue
        latest = max(found[1]["versions"], key=semver.Version.parse)
        stays = plugin.settings.frozen or plugin.name in pins.stuck
        targets = [] if stays else [plugin.name]
        resolver = plan.Resolver(installed, lookup, upgrade=frozenset(targets))
        steps = resolver.resolve(pins.asked(targets))
        allowed = next((s.version for s in steps if s.name == plugin.name), None)
        current = installed[plugin.name].version
        if latest != current:
            records.append(
                {
                    "name": plugin.name,
                    "installed": current,
                    "allowed": allowed or current,
                    "latest": latest,
                    "index": found[0].name,
                }
            )
    ctx.listing(
        opts.get("format", ctx.format),
        records,
        "All plugins from indexes are up to date",
        ["NAME", "INSTALLED", "ALLOWED", "LATEST", "INDEX"],
        lambda r: [r["name"], r["installed"], r["allowed"], r["latest"], r["index"]],
    )
    return 0


def _requires(plugin: registry.Plugin) -> dict[str, str]:
    found = plugin.record.get("requires")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
