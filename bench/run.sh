#!/usr/bin/env bash
# walrus next to pgBackRest: archiving rate, one wal-push, start-up, full backup, restore, replay
# through restore_command, and each verb's peak RSS. Prints one table (median, min–max of runs).
# See bench/README.md.
#
#   bash bench/run.sh                        # scale 100 (~1.5 GB), 3 runs per figure (~20 min)
#   BENCH_SCALE=10 BENCH_RUNS=1 bash bench/run.sh
#
# Runs as root (PostgreSQL and the tools run as postgres via runuser). Needs PostgreSQL 15,
# /usr/bin/time and a built walrus (scripts/setup.sh); installs pgbackrest with apt-get when root
# and missing, else prints walrus's figures alone.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root (PostgreSQL runs as postgres via runuser)" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
apt_install() {
  command -v apt-get >/dev/null || return 1
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
[ -x /usr/bin/time ] || apt_install time || { echo "bench/run.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
if [ "${BENCH_NO_PGBACKREST:-}" != 1 ] && ! command -v pgbackrest >/dev/null; then
  apt_install pgbackrest || { echo "bench/run.sh: pgbackrest not available: walrus figures only" >&2; export BENCH_NO_PGBACKREST=1; }
fi
# bin/walrus runs dist/: build it (with the precompiled schema validators) so the figures are those of the shipped CLI.
npm run build --silent >/dev/null || { echo "bench/run.sh: build failed" >&2; exit 1; }
# PostgreSQL (as postgres) runs bin/walrus: the checkout must be readable by it.
runuser -u postgres -- test -r bin/walrus || { echo "bench/run.sh: postgres cannot read $(pwd)/bin/walrus" >&2; exit 2; }
exec node --import tsx bench/compare.ts
