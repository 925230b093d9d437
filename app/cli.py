"""Command-line administration: `flask --app app <group> <command>`.

Each command calls the same plain functions as the admin API and prints JSON.
"""

from __future__ import annotations

import json

import click
from flask import Flask
from flask.cli import AppGroup

from app import accounts
from app.errors import ApiError
from app.models import database

developers = AppGroup("developers", help="Manage developer accounts.")
tokens = AppGroup("tokens", help="Issue and revoke developers' API tokens.")


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


def register(app: Flask) -> None:
    app.cli.add_command(developers)
    app.cli.add_command(tokens)
