# Shared setup for scripts/run and scripts/test (sourced, not run).
# Idempotent: each step checks before it installs.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MOSIS_VENV:-$ROOT/.venv}"

log() { printf '==> %s\n' "$*" >&2; }

# The virtualenv with the appliance and its extras, and the `mosis` client;
# reinstalled when pyproject.toml, format/pyproject.toml or cli/pyproject.toml
# changes. An install with more extras serves one with fewer (scripts/test's
# native,test serves scripts/run's native).
ensure_venv() {
    local extras="${1:-}"
    local hash; hash="$(cat "$ROOT/pyproject.toml" "$ROOT/format/pyproject.toml" "$ROOT/cli/pyproject.toml" | sha256sum | cut -c1-16)"
    local stamp="$VENV/.installed-$hash${extras:+-${extras//,/-}}"
    local have extra covered
    for have in "$VENV/.installed-$hash" "$VENV/.installed-$hash"-*; do
        [ -f "$have" ] || continue
        covered=1
        for extra in ${extras//,/ }; do
            case "${have#"$VENV/.installed-$hash"}-" in *"-$extra-"*) ;; *) covered=0 ;; esac
        done
        [ "$covered" = 1 ] && return 0
    done
    log "installing Python packages into $VENV${extras:+ (with $extras)}"
    "$ROOT/scripts/install-python" "$VENV" "$extras" --editable
    find "$VENV" -maxdepth 1 -name '.installed-*' ! -name ".installed-$hash*" -delete
    touch "$stamp"
}

# Debian packages the native stack needs (nginx, Prometheus, ...), installed
# when missing and when this user may install them.
ensure_apt() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            log "please install: ${missing[*]} (apt-get install ${missing[*]})"; return 1
        fi
    fi
    log "installing ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    # Debian's packages start their daemons; we run our own copies instead.
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    $sudo rm -f /usr/sbin/policy-rc.d
}

# PostgreSQL for the tests: use the one on 127.0.0.1:5432, start it if it is
# installed but stopped.
ensure_postgres() {
    if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
    if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1; then
        log "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    fi
    pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL is not reachable on 127.0.0.1:5432"; return 1; }
}

# nginx, the edge in front of the API and storage (Debian's package: it has
# the secure_link, slice, realip, dav and stub_status modules built in), and
# its njs module (the allow-list of storage's response headers).
ensure_nginx() {
    if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then ensure_apt nginx; fi
    ensure_apt libnginx-mod-http-js
}

# The linters the tests run, npm packages pinned in tools/package-lock.json,
# installed under tools/node_modules, their install scripts not run
# (reinstalled when the lock changes): Redocly CLI and Spectral on the
# OpenAPI document, dclint on compose.yaml (the Compose specification's
# schema and the rules of .dclintrc).
ensure_node_tools() {
    local dir="$ROOT/tools"
    local hash; hash="$(cat "$dir/package.json" "$dir/package-lock.json" | sha256sum | cut -c1-16)"
    local stamp="$dir/node_modules/.installed-$hash"
    if [ -f "$stamp" ]; then return 0; fi
    command -v npm >/dev/null || ensure_apt nodejs npm
    # Redocly CLI 2 runs on Node.js 20.19 or later.
    if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number);
                  process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
        log "Node.js $(node --version) is too old for the OpenAPI linters: install 20.19 or later"
        return 1
    fi
    log "installing the linters into $dir/node_modules"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$stamp"
}
