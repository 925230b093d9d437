"""Command-line administration: `flask --app app <group> <command>`.

Each command calls the same plain functions as the admin API and prints JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup

from app.catalog import accounts, signatures
from app.housekeeping import recovery, replica, retention
from app.housekeeping.backup import BackupError, create_backup, list_backups, restore_backup
from app.housekeeping.integrity import scrub, sweep_orphans
from app.platform import conformance
from app.platform.errors import ApiError
from app.platform.models import database
from app.platform.outbox import enqueue_missing
from app.platform.signing import read_key_file
from app.platform.storage import Storage
from app.services import services

developers = AppGroup("developers", help="Manage developer accounts.")
tokens = AppGroup("tokens", help="Issue and revoke developers' API tokens.")
signing_keys = AppGroup("signing-keys", help="Rotate and revoke the package signing keys (docs/signing.md).")


def _store(key_files: tuple[str, ...]):
    """The keys at hand, with private keys kept off the server handed over."""
    return services().keys.with_keys([read_key_file(Path(f)) for f in key_files])


KEY_OPTION = click.option("--key", "key_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
                          help="A private key (PEM or base64 seed) kept off the server that must sign "
                               "the new keyring version; may be repeated.")


@signing_keys.command("list")
def list_keyring() -> None:
    _echo(_run(lambda: services().keys.current().to_json()))


@signing_keys.command("rotate")
@KEY_OPTION
@click.option("--new-key", type=click.Path(exists=True, dir_okay=False),
              help="Take this private key as the new key instead of making one.")
@click.option("--retire", help="The key id to retire (default: the active packages key).")
@click.option("--roles", help="The new key's roles, comma-separated: keyring, packages (default: the "
                              "retired key's).")
def rotate_keys(key_files, new_key, retire, roles) -> None:
    options = {"retire": retire, "roles": roles.split(",") if roles else None,
               "new_key": read_key_file(Path(new_key)) if new_key else None}
    _echo(_run(lambda: signatures.rotate(services(), "cli", _store(key_files), **options)))


@signing_keys.command("split")
@click.argument("keyring_key", type=click.Path(exists=True, dir_okay=False))
def split_roles(keyring_key) -> None:
    """KEYRING_KEY (a private key file kept off the server) takes the keyring
    role; a new key on the server signs packages."""
    key = read_key_file(Path(keyring_key))
    _echo(_run(lambda: signatures.split(services(), key, "cli")))


@signing_keys.command("revoke")
@click.argument("key_id")
@KEY_OPTION
def revoke_key(key_id, key_files) -> None:
    _echo(_run(lambda: signatures.revoke(services(), key_id, "cli", _store(key_files))))


@signing_keys.command("resign")
def resign() -> None:
    """Finish moving every signed version to the active key (the scheduler
    does it every minute too)."""
    _echo({"resigned": _run(lambda: signatures.resign_all(services()))})


def _run(fn, *args):
    """Run `fn` with a database connection; API errors become CLI errors."""
    with database.connection_context():
        try:
            return fn(*args)
        except ApiError as e:
            raise click.ClickException(f"{e.code}: {e.message}") from None


def _echo(value) -> None:
    click.echo(json.dumps(value, indent=2))


@developers.command("create")
@click.option("--name", required=True)
@click.option("--email", required=True)
def create_developer(name: str, email: str) -> None:
    """Create a developer and print its token (shown once)."""
    developer, token, row = _run(accounts.create_developer, name, email)
    _echo({"developer": accounts.developer_dict(developer), "token": token, "token_id": row.id})


@developers.command("list")
def list_developers() -> None:
    _echo([accounts.developer_dict(d) for d in _run(accounts.developers)])


@tokens.command("list")
@click.argument("developer_id")
def list_tokens(developer_id: str) -> None:
    _echo([accounts.token_dict(t) for t in _run(accounts.tokens_of, developer_id)])


@tokens.command("issue")
@click.argument("developer_id")
def issue_token(developer_id: str) -> None:
    """Issue another token for a developer (shown once)."""
    token, row = _run(accounts.new_token, developer_id)
    _echo({"token": token, "token_id": row.id})


@tokens.command("revoke")
@click.argument("token_id")
def revoke_token(token_id: str) -> None:
    """Revoke a token; it is refused from the next request on."""
    _echo(accounts.token_dict(_run(accounts.revoke_token, token_id)))


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


retention_cli = AppGroup("retention", help="Apply or forecast the retention policy.")


@retention_cli.command("run")
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted.")
@click.option("--now", "now_text", metavar="ISO", help="Forecast at this time (with --dry-run).")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def retention_run(dry_run: bool, now_text: str | None, as_json: bool) -> None:
    """Purge (or list, with --dry-run) the versions whose retention ran out."""
    now = None
    if now_text:
        if not dry_run:
            raise click.UsageError("--now forecasts only: use it with --dry-run")
        try:
            now = retention.parse_instant(now_text)
        except ValueError:
            raise click.BadParameter("an ISO 8601 time such as 2027-01-31T12:00:00Z",
                                     param_hint="--now") from None
    with database.connection_context():
        report = retention.run_retention(services(), now, dry_run=dry_run, actor="admin")
    if as_json:
        return _echo(report)
    verb = "would go" if dry_run else "purged"
    for item in report["items"]:
        click.echo(f"{item['package_id']} {item['version_code']} ({item['status']} -> {item['outcome']}): "
                   f"{item['reason']}, {_mib(item['bytes'])}")
    totals = report["totals"]
    click.echo(f"{totals['versions']} versions {verb} at {report['now']}, {_mib(totals['bytes'])}")
    for error in report["errors"]:
        click.echo(f"error: version {error['version_id']}: {error['error']}", err=True)
    if report["errors"]:
        raise SystemExit(1)


storage_cli = AppGroup("storage", help="Check storage: the provider, and that it agrees with the database.")


@storage_cli.command("orphans")
@click.option("--dry-run", is_flag=True, help="Only report; delete nothing.")
@click.option("--delete/--no-delete", default=None,
              help="Delete orphans past the grace period (default: MOSIS_ORPHAN_DELETE).")
def storage_orphans(dry_run: bool, delete: bool | None) -> None:
    """Find objects no version knows, and versions whose objects are missing."""
    with database.connection_context():
        _echo(sweep_orphans(services(), delete=delete, dry_run=dry_run))


@storage_cli.command("scrub")
@click.option("--limit", type=click.IntRange(min=1), help="Packages to re-read (default: the hourly share).")
def storage_scrub(limit: int | None) -> None:
    """Re-read packages and re-check their sha256 against the database."""
    with database.connection_context():
        report = scrub(services(), limit=limit)
    _echo(report)
    if report["failures"]:
        raise SystemExit(1)


@storage_cli.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def storage_check(as_json: bool) -> None:
    """Ask the configured S3 provider for everything the appliance relies on.

    Works under a throw-away prefix, removes what it wrote, and exits 1 when
    a required check fails (docs/deploy.md, Checking a provider).
    """
    settings = services().settings
    web = conformance.Web.for_settings(settings)
    try:
        report = conformance.run(Storage(settings), web)
    finally:
        web.close()
    if as_json:
        _echo({"endpoint": settings.s3_endpoint, "bucket": settings.bucket, **report.as_dict()})
    else:
        click.echo(f"storage check of bucket {settings.bucket} at {settings.s3_endpoint} "
                   f"(under {report.prefix})")
        rows = [("check", "need", "result", "provider's answer")] + [
            (r.name, "required" if r.required else "advisory", r.status.upper(), r.answer) for r in report.results]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
        cleanup = report.cleanup
        click.echo(f"cleanup: {cleanup['removed']} objects removed"
                   + "".join(f"; {problem}" for problem in cleanup["problems"]))
        failing = [r for r in report.results if r.status == "fail"]
        for r in failing:
            click.echo(f"{'FAILED' if r.required else 'advisory'}: {r.name}: {r.what}", err=True)
        click.echo("the appliance can run on this storage" if report.ok else
                   "the appliance cannot run on this storage: a required check failed")
    if not report.ok:
        raise SystemExit(1)


backup_cli = AppGroup("backup", help="Database backups in the bucket.")


def _backup_call(fn, *args, connect: bool = True):
    try:
        if not connect:
            return fn(services(), *args)
        with database.connection_context():
            return fn(services(), *args)
    except BackupError as e:
        raise click.ClickException(str(e)) from None


@backup_cli.command("create")
def backup_create() -> None:
    """Write a database backup to the bucket now."""
    _echo(_backup_call(create_backup))


@backup_cli.command("list")
def backup_list() -> None:
    """The stored backups, newest first."""
    for o in _backup_call(list_backups):
        click.echo(f"{o.key}\t{o.size}\t{o.last_modified.isoformat() if o.last_modified else ''}")


@backup_cli.command("restore")
@click.argument("key", required=False)
@click.option("--database-url", help="Restore into this database instead of the configured one.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def backup_restore(key: str | None, database_url: str | None, yes: bool) -> None:
    """Restore backup KEY (default: the newest). Stop the API and scheduler first."""
    if not yes:
        click.confirm(f"Replace the contents of {'that' if database_url else 'the configured'} database "
                      f"with backup {key or '(newest)'}?", abort=True)
    # Hand the database over to the restore: no connection of ours stays open.
    db = database.obj
    if hasattr(db, "close_all"):
        db.close_all()
    elif not db.is_closed():
        db.close()
    _echo(_backup_call(restore_backup, key, database_url, connect=False))


replica_cli = AppGroup("replica", help="The off-site replica: its state, and restoring from it.")


@replica_cli.command("status")
def replica_status() -> None:
    """What is pending, copied and verified on the replica."""
    with database.connection_context():
        _echo(replica.status(services()))


@replica_cli.command("sync")
def replica_sync() -> None:
    """Queue copies of the objects the replica was never told about: those
    written before it was configured. Safe to run again: what the outbox
    knows is not queued twice."""
    svc = services()
    if not svc.settings.replica_configured:
        raise click.ClickException("no replica is configured: set MOSIS_REPLICA_S3_ENDPOINT and the other "
                                   "MOSIS_REPLICA_S3_* settings first")
    with database.connection_context():
        _echo(enqueue_missing(svc.settings, svc.storage))


@replica_cli.command("restore")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def replica_restore(as_json: bool) -> None:
    """Rebuild from the replica alone into an empty database and bucket:
    the newest metadata backup, every object, then check every package's
    sha256 and signature and every asset. Resumable; exits 1 on any problem."""
    try:
        report = recovery.restore(services(), echo=lambda line: click.echo(line, err=True))
    except (recovery.RecoveryError, BackupError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        _echo(report)
    else:
        o, c = report["objects"], report["checked"]
        click.echo(f"restored from {report['backup']} in {report['seconds']} s: {o['copied']} objects copied "
                   f"({_mib(o['bytes'])}), {o['present']} already there, {o['deleted_before_backup']} left out "
                   f"(deleted before the backup); checked {c['versions']} versions and {c['assets']} assets")
        for p in report["problems"]:
            click.echo(f"PROBLEM {p['key']}: {p['problem']}", err=True)
        click.echo("the restore is complete" if report["ok"] else
                   f"the restore is NOT complete: {len(report['problems'])} problems")
    if not report["ok"]:
        raise SystemExit(1)


def register(app: Flask) -> None:
    app.cli.add_command(developers)
    for group in (tokens, signing_keys, retention_cli, storage_cli, backup_cli, replica_cli):
        app.cli.add_command(group)
