"""A schemathesis check of ours (loaded through SCHEMATHESIS_HOOKS): the
error code of an answer is one its operation declares for that status
(`x-error-codes`), so a code a route gives but does not declare fails the
fuzzing run even where the static reading (tools/errorcodes.py) missed it."""

from __future__ import annotations

import json

import schemathesis


@schemathesis.check
def error_code_is_declared(ctx, response, case):
    declared = case.operation.definition.raw.get("responses", {}).get(str(response.status_code), {})
    codes = declared.get("x-error-codes")
    if codes is None:
        return None  # an undeclared status is status_code_conformance's finding
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"{response.status_code} without an error code: {response.content[:200]!r}") from None
    if code not in codes:
        raise AssertionError(f"{response.status_code} {code!r} is not among the codes the operation "
                             f"declares for it: {', '.join(codes)}")
    return None
