"""Command-line administration: `flask --app app <group> <command>`."""

from __future__ import annotations

import json

import click
import peewee as pw
from flask import Flask
from flask.cli import AppGroup

from app.auth import issue_token
from app.models import Developer, database, record_audit

developers = AppGroup("developers", help="Manage developer accounts.")


@developers.command("create")
@click.option("--name", required=True)
@click.option("--email", required=True)
def create_developer(name: str, email: str) -> None:
    """Create a developer and print its token (shown once)."""
    with database.connection_context():
        try:
            with database.atomic():
                developer = Developer.create(name=name, email=email.lower())
                token, row = issue_token(developer)
                record_audit("admin", "developer.created", "developer", developer.id, token_id=row.id)
        except pw.IntegrityError:
            raise click.ClickException("a developer with this e-mail exists already") from None
    click.echo(json.dumps({"developer_id": developer.id, "token": token}))


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2))


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


retention_cli = AppGroup("retention", help="Apply or forecast the retention policy.")


@retention_cli.command("run")
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted.")
@click.option("--now", "now_text", metavar="ISO", help="Forecast at this time (with --dry-run).")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def retention_run(dry_run: bool, now_text: str | None, as_json: bool) -> None:
    """Purge (or list, with --dry-run) the versions whose retention ran out."""
    from app import retention
    from app.services import services

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
        return _echo_json(report)
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


storage_cli = AppGroup("storage", help="Check that storage and the database agree.")


@storage_cli.command("orphans")
@click.option("--dry-run", is_flag=True, help="Only report; delete nothing.")
@click.option("--delete/--no-delete", default=None,
              help="Delete orphans past the grace period (default: MOSIS_ORPHAN_DELETE).")
def storage_orphans(dry_run: bool, delete: bool | None) -> None:
    """Find objects no version knows, and versions whose objects are missing."""
    from app.integrity import sweep_orphans
    from app.services import services

    with database.connection_context():
        _echo_json(sweep_orphans(services(), delete=delete, dry_run=dry_run))


@storage_cli.command("scrub")
@click.option("--limit", type=click.IntRange(min=1), help="Packages to re-read (default: the hourly share).")
def storage_scrub(limit: int | None) -> None:
    """Re-read packages and re-check their sha256 against the database."""
    from app.integrity import scrub
    from app.services import services

    with database.connection_context():
        report = scrub(services(), limit=limit)
    _echo_json(report)
    if report["failures"]:
        raise SystemExit(1)


backup_cli = AppGroup("backup", help="Database backups in the bucket.")


def _backup_call(fn, *args, connect: bool = True):
    from app.backup import BackupError
    from app.services import services

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
    from app.backup import create_backup

    _echo_json(_backup_call(create_backup))


@backup_cli.command("list")
def backup_list() -> None:
    """The stored backups, newest first."""
    from app.backup import list_backups

    for o in _backup_call(list_backups):
        click.echo(f"{o.key}\t{o.size}\t{o.last_modified.isoformat() if o.last_modified else ''}")


@backup_cli.command("restore")
@click.argument("key", required=False)
@click.option("--database-url", help="Restore into this database instead of the configured one.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def backup_restore(key: str | None, database_url: str | None, yes: bool) -> None:
    """Restore backup KEY (default: the newest). Stop the API and scheduler first."""
    from app.backup import restore_backup

    if not yes:
        click.confirm(f"Replace the contents of {'that' if database_url else 'the configured'} database "
                      f"with backup {key or '(newest)'}?", abort=True)
    # Hand the database over to the restore: no connection of ours stays open.
    db = database.obj
    if hasattr(db, "close_all"):
        db.close_all()
    elif not db.is_closed():
        db.close()
    _echo_json(_backup_call(restore_backup, key, database_url, connect=False))


def register(app: Flask) -> None:
    app.cli.add_command(developers)
    for group in (retention_cli, storage_cli, backup_cli):
        app.cli.add_command(group)
