"""A linter for compose.yaml, the Dockerfile and what they mount.

The files are read as compose and docker read them (model.py: YAML anchors
and merge keys resolved, `${VAR:-default}` and `${VAR:?message}`
interpolated against .env.example, the Dockerfile split into its stages),
then held to the appliance's invariants (checks.py): pinned images,
healthchecks and restart policies, waiting dependencies, named volumes for
every piece of state, only the edge published, no secret written into a
file, the settings the app reads set and documented, the Dockerfile's
stages, Prometheus and the edge pointed at real services, the docs' compose
snippets and links.

    python -m tools.composecheck [compose.yaml]

prints one line per problem (`check: problem`) and exits 1 when there is
any, 0 when there is none. It reads files only; the repository is the
directory of the compose.yaml it is given. tests/test_compose.py runs it.
"""

from tools.composecheck.checks import CHECKS, run_checks

__all__ = ["CHECKS", "run_checks"]
