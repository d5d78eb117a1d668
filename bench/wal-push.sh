#!/usr/bin/env bash
# wal-push timings: median wall time of bin/walrus wal-push per 16 MiB segment (file storage, lzo,
# with and without gpg) and the archiving rate with PostgreSQL 15 driving archive_command.
# Needs root (PostgreSQL runs as the postgres user), lzop and PostgreSQL 15. Prints a table.
#   RUNS=7 PG_SCALE=20 bash bench/wal-push.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# bin/walrus runs dist/ when present: build it so the figures are those of the compiled CLI
npx tsc -p tsconfig.build.json >/dev/null || true
exec node --import tsx bench/wal-push.ts
