#!/usr/bin/env bash
# The whole test suite: set-up (installs what is missing, when allowed), then every test file
# under test/ with Node's built-in runner through tsx.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mapfile -t files < <(find test -name '*.test.ts' | sort)
exec node --import tsx --expose-gc --test --test-concurrency="${WALRUS_TEST_CONCURRENCY:-3}" "${files[@]}"
