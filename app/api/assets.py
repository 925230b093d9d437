"""Developer routes for an app's icon and screenshots (docs/assets.md)."""

from __future__ import annotations

from flask import Blueprint, g

from app.api.auth import own_app, require_developer
from app.api.inputs import Field, integers, read_json, read_upload, takes_upload
from app.catalog import assets
from app.services import services

bp = Blueprint("assets", __name__, url_prefix="/v1/apps")


def _upload(app_id: str, field: str):
    """The developer's app and the image sent in `field` (after the app is found)."""
    app = own_app(app_id)
    return app, read_upload(field, services().settings.max_asset_bytes)


def _icons(app) -> dict:
    return {"icons": assets.icon_urls(services(), app)}


def _screenshots(shots) -> dict:
    svc = services()
    return {"screenshots": [assets.screenshot_dict(svc, s) for s in shots]}


@bp.put("/<hexid:app_id>/icon")
@takes_upload
@require_developer("assets")
def put_icon(app_id):
    app, data = _upload(app_id, "icon")
    return _icons(assets.set_icon(services(), app, data, g.principal.actor))


@bp.get("/<hexid:app_id>/icon")
@require_developer("read")
def get_icon(app_id):
    return _icons(own_app(app_id))


@bp.delete("/<hexid:app_id>/icon")
@require_developer("assets")
def delete_icon(app_id):
    assets.delete_icon(services(), own_app(app_id), g.principal.actor)
    return "", 204


@bp.post("/<hexid:app_id>/screenshots")
@takes_upload
@require_developer("assets")
def add_screenshot(app_id):
    app, data = _upload(app_id, "screenshot")
    shot = assets.add_screenshot(services(), app, data, g.principal.actor)
    return {"screenshot": assets.screenshot_dict(services(), shot)}, 201


@bp.get("/<hexid:app_id>/screenshots")
@require_developer("read")
def list_screenshots(app_id):
    return _screenshots(assets.screenshots_of(own_app(app_id)))


@bp.put("/<hexid:app_id>/screenshots/order")
@require_developer("assets")
def reorder_screenshots(app_id):
    app = own_app(app_id)
    svc = services()
    body = read_json({"positions": Field(list)}, svc.settings.max_json_bytes)
    positions = integers("positions", body["positions"])
    return _screenshots(assets.reorder_screenshots(services(), app, positions, g.principal.actor))


@bp.delete("/<hexid:app_id>/screenshots/<position:position>")
@require_developer("assets")
def delete_screenshot(app_id, position):
    app = own_app(app_id)
    assets.delete_screenshot(services(), app, position, g.principal.actor)
    # The ones after it moved up a place: answer with the new order.
    return _screenshots(assets.screenshots_of(app))
