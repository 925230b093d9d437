"""Platform: what every other layer stands on.

Settings, the database and its models and migrations, the object-storage
adapter, the signing key, metrics, logging, health checks and the job runner.
Nothing here knows about apps, versions or nginx; it imports only the standard
library, third-party libraries and `mosis_format`.
"""
