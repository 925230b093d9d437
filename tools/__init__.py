"""The repository's own checkers, run by the test suite (and by hand).

Python: `tools.composecheck` (compose.yaml, the Dockerfile and what they
mount) and `tools.errorcodes` (which API errors each route can raise, read
statically from app/). Node.js: the linters pinned in package.json, installed
under node_modules by scripts/test. None of it is part of the appliance or
its image.
"""
