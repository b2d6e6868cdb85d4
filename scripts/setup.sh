# shellcheck shell=bash
# Sourced by scripts/demo and scripts/test: make the virtualenv match requirements.lock (quick when it does).
#   MLOPS_VENV  the virtualenv to use (default <repo>/.venv)
#   PYTHON      the interpreter that creates it (default python3.11, else python3 if it is 3.11)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MLOPS_VENV:-$REPO_ROOT/.venv}"
export UV_LINK_MODE="${UV_LINK_MODE:-copy}"  # the uv cache may sit on another filesystem

_mlops_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

_mlops_setup() {
    local py stamp want
    if ! "$VENV/bin/python" -c '' 2>/dev/null; then
        py="$(_mlops_python)" || return 1
        echo "setup: creating $VENV with $py"
        "$py" -m venv "$VENV" || return 1
    fi
    # Everything the environment depends on: when none of it changed since the last sync, skip the sync.
    want="$(cat "$REPO_ROOT/requirements.lock" "$REPO_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    stamp="$VENV/.mlops-setup"
    if [ -x "$VENV/bin/uv" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    if [ ! -x "$VENV/bin/uv" ]; then
        echo "setup: installing uv into $VENV"
        "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --upgrade >/dev/null || return 1
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv || return 1
    fi
    echo "setup: syncing $VENV with requirements.lock"
    # Exactly the locked packages (stray ones are removed), plus uv itself so the next sync can run, and
    # this checkout in editable mode (a sync installs no dependencies: they are all in the lock).
    local extra status=0
    extra="$(mktemp)"
    "$VENV/bin/uv" --version | awk '{print "uv==" $2}' >"$extra"
    echo "-e $REPO_ROOT" >>"$extra"
    "$VENV/bin/uv" pip sync --quiet --python "$VENV/bin/python" "$REPO_ROOT/requirements.lock" "$extra" || status=$?
    rm -f "$extra"
    [ "$status" -eq 0 ] || return 1
    echo "$want" >"$stamp"
}

_mlops_setup || { echo "setup: failed" >&2; exit 1; }
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
