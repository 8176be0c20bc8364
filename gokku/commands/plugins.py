"""``plugins:*`` verbs."""

from pathlib import Path

from gokku import confirm, services
from gokku.cmdline import parse
from gokku.commands import plugin_index, usage_line
from gokku.context import Context
from gokku.errors import GokkuError, UsageError
from gokku.names import check_name, is_name
from gokku.plugins import contract, install, registry
from gokku.plugins.sources import looks_like_path


def add(ctx: Context, args: list[str]) -> int:
    opts = parse(
        args,
        usage_line("plugins:add"),
        values={"--name": "name", "--ref": "ref"},
        flags={"--force": "force", "--yes": "yes", "-y": "yes"},
        min_args=1,
        max_args=1,
    )
    text, name, ref = opts.positional[0], opts.get("name"), opts.get("ref")
    wanted = None if name or ref else plugin_index.request(ctx, text)
    if wanted is not None:
        plugin_index.add(ctx, *wanted, yes=opts.flag("yes"), force=opts.flag("force"))
    else:
        install.add(ctx, text, name, ref, opts.flag("force"))
    return 0


def update(ctx: Context, args: list[str]) -> int:
    usage = usage_line("plugins:update")
    opts = parse(
        args,
        usage,
        values={"--ref": "ref"},
        flags={"--force": "force", "--all": "all", "--yes": "yes", "-y": "yes"},
        max_args=1,
    )
    names, ref, force = opts.positional, opts.get("ref"), opts.flag("force")
    if opts.flag("all") == bool(names) or (opts.flag("all") and ref):
        raise UsageError(f"give NAME or --all (not both, no --ref with --all); usage: {usage}")
    if names and ref and _from_index(ctx, names[0]):
        raise UsageError(
            f"plugin {names[0]} comes from an index, which --ref would bypass (unsigned, "
            f"unchecked): update it through the index (plugins:add {names[0]}@VERSION), or "
            f"plugins:remove {names[0]} then plugins:add the source"
        )
    if names and (ref or not _from_index(ctx, names[0])):
        install.update(ctx, names[0], ref, force)
    else:
        plugin_index.update(ctx, names, opts.flag("yes"), force)
    return 0


def _from_index(ctx: Context, name: str) -> bool:
    """Installed from an index. A plugin missing after a cut-off update is not: its
    recorded source's update puts the previous copy back first."""
    if not ctx.root.plugin_dir(check_name("plugin", name)).is_dir():
        return False
    return bool(registry.load(ctx.root, name).record.get("index"))


def remove(ctx: Context, args: list[str]) -> int:
    opts = parse(
        args,
        usage_line("plugins:remove"),
        flags={"--force": "force", "-f": "force"},
        min_args=1,
        max_args=1,
    )
    name = check_name("plugin", opts.positional[0])
    users = [s.name for s in services.all_services(ctx.root) if s.plugin == name]
    force = opts.flag("force")
    if users and not force:
        lost = [f"the plugin its services {', '.join(users)} need (they stay, without it)"]
        confirm.destroy(ctx, "plugin", name, lost, force)
        force = True
    install.remove(ctx, name, force)
    return 0


def list_(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("plugins:list"), values={"--format": "format"}, max_args=0)
    counts: dict[str, int] = {}
    for service in services.all_services(ctx.root):
        counts[service.plugin] = counts.get(service.plugin, 0) + 1
    records = [
        {
            "name": p.name,
            "namespace": p.namespace or p.name,
            "version": p.record.get("version") or "",
            "source": p.record.get("url") or "",
            "commit": p.record.get("commit"),
            "sha256": p.record.get("sha256"),
            "index": p.record.get("index") or "unverified",
            "installed_at": p.record.get("installed_at") or "",
            "services": counts.get(p.name, 0),
            "pin": p.settings.pin,
            "enabled": not p.disabled,
        }
        for p in registry.installed(ctx.root)
    ]
    ctx.listing(
        opts.get("format", ctx.format),
        records,
        "No plugins installed",
        [
            "NAME",
            "NAMESPACE",
            "VERSION",
            "PIN",
            "STATE",
            "INDEX",
            "COMMIT",
            "SHA256",
            "SOURCE",
            "SERVICES",
        ],
        lambda r: [
            r["name"],
            r["namespace"],
            r["version"] or "-",
            r["pin"] or "-",
            "enabled" if r["enabled"] else "disabled",
            r["index"],
            (r["commit"] or "-")[:12],
            (r["sha256"] or "-")[:12],
            r["source"],
            str(r["services"]),
        ],
    )
    return 0


def validate(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("plugins:validate"), min_args=1, max_args=1)
    target = opts.positional[0]
    if is_name(target) and ctx.root.plugin_dir(target).is_dir():
        tree = ctx.root.plugin_dir(target)
    elif ctx.request.identity.over_ssh:
        raise UsageError("over SSH, validate an installed plugin by NAME (paths stay local)")
    elif looks_like_path(target) and Path(target).is_dir():
        tree = Path(target)
    else:
        raise GokkuError(f"{target[:64]!r} is neither an installed plugin nor a directory")
    findings = contract.validate(tree)
    for finding in findings:
        ctx.out(f"{finding.level}: {finding.message}")
    if any(f.level == "error" for f in findings):
        return 1
    if not findings:
        ctx.out(f"ok: {target} follows the plugin contract")
    return 0
