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


def register(app: Flask) -> None:
    app.cli.add_command(developers)
