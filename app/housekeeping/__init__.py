"""Housekeeping: the scheduled jobs that keep storage and metadata in order.

Retention, integrity scrub and orphan sweeps, metadata backup, storage usage,
cost and the monitoring gauges. Each module declares its jobs the same way,
as `JOBS` (a list of `app.platform.jobs.Job`). It imports `app.platform`,
`app.edge`, `app.catalog` and `mosis_format`; never `app.api`.
"""
