# The Mosis storage appliance image: API (gunicorn), scheduler and the
# edge's configuration renderer. The build stage installs the package into
# /opt/venv with the same script scripts/run uses; the final stage has no
# compilers or build tools.
#
# Build arguments, each defaulting to what production uses:
#   PYTHON_IMAGE  the base of both stages (the official Python image);
#   PG_MAJOR      the PostgreSQL client's major version: the server's;
#   PGDG_APT      the PostgreSQL project's apt repository the client comes
#                 from. Empty: Debian's own postgresql-client-$PG_MAJOR
#                 (bookworm has 15 only), for builds that cannot reach it.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts/install-python scripts/install-python
COPY format format
COPY app app
RUN scripts/install-python /opt/venv

FROM ${PYTHON_IMAGE}
# pg_dump and pg_restore for the metadata backups when the database is
# PostgreSQL. A pg_dump older than its server refuses to dump it, and Debian
# bookworm ships 15, so they come from the PostgreSQL project's repository in
# the major version of the server in compose.yaml. Its signing key
# (B97B0AFC AA1A47F0 44F244A0 7FCC7D46 ACCC4CF8) is kept in docker/pgdg.asc.
ARG PG_MAJOR=17
ARG PGDG_APT=https://apt.postgresql.org/pub/repos/apt
COPY docker/pgdg.asc /usr/share/keyrings/pgdg.asc
RUN chmod 644 /usr/share/keyrings/pgdg.asc \
    && apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && if [ -n "$PGDG_APT" ]; then \
        echo "deb [signed-by=/usr/share/keyrings/pgdg.asc] $PGDG_APT bookworm-pgdg main" \
            > /etc/apt/sources.list.d/pgdg.list \
        && apt-get update; \
    fi \
    && apt-get install -y --no-install-recommends "postgresql-client-$PG_MAJOR" \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 mosis \
    && useradd --system --uid 10001 --gid mosis --home-dir /var/lib/mosis --create-home mosis
# Code and templates stay root's: the process running them cannot change them.
COPY --from=build /opt/venv /opt/venv
# The edge's template and Cloudflare's ranges are package data of app.edge:
# the image renders nginx's configuration for compose with them
# (python -m app.edge --target compose).
COPY app /srv/mosis/app
RUN install -d -o mosis -g mosis /etc/mosis/edge
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MOSIS_DATA_DIR=/var/lib/mosis \
    MOSIS_APP_BIND=0.0.0.0:8000
WORKDIR /srv/mosis
USER mosis
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=5s --retries=3 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
# gunicorn's workers share their metrics through files in
# PROMETHEUS_MULTIPROC_DIR (app/gunicorn_conf.py creates and empties it). It
# is gunicorn's alone: every other command of the image (the scheduler, the
# edge's renderer, `flask --app app …`) keeps its metrics in memory.
CMD ["sh", "-c", "PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus exec gunicorn -c app/gunicorn_conf.py 'app:create_app()'"]
