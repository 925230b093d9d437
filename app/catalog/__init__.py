"""Catalog: developers, apps, versions, uploads, validation and assets.

The domain of the store: each module owns its rows and objects and the rules
for changing them. It imports `app.platform`, `app.edge` (to purge what a
change made stale) and `mosis_format`; never `app.api` or `app.housekeeping`.
"""
