#!/usr/bin/env bash
# backup-push throughput and memory on a real PostgreSQL 15 cluster filled by pgbench.
#
#   bash bench/backup.sh                 # scale 100 (~1.5 GB data directory)
#   SCALE=20 POOL_SIZE=2 bash bench/backup.sh
#
# Settings (environment): SCALE (pgbench scale, default 100), POOL_SIZE (partitions at once,
# default 2), COMPRESSION (lzo|none, default lzo), FSYNC (true|false: file storage fsync, default true),
# PG_BIN (default /usr/lib/postgresql/15/bin), LOG_LEVEL (walrus log on stderr, default warn). Runs as root; PostgreSQL runs as postgres.
# The storage is a file storage in the temp dir, on the same disk as the cluster.
# Prints the data directory size, backup-push wall time, MB/s (data bytes / wall time) and peak RSS.
set -euo pipefail

SCALE="${SCALE:-100}"
POOL_SIZE="${POOL_SIZE:-2}"
COMPRESSION="${COMPRESSION:-lzo}"
FSYNC="${FSYNC:-true}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WALRUS="$REPO/bin/walrus"

[ "$(id -u)" = 0 ] || { echo "bench/backup.sh: run as root (PostgreSQL runs as postgres via runuser)" >&2; exit 2; }
command -v /usr/bin/time >/dev/null || { echo "bench/backup.sh: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

# compiled code, so start-up and tsx do not count
(cd "$REPO" && npx tsc -p tsconfig.build.json >/dev/null 2>&1) || true

WORK="$(mktemp -d /tmp/walrus-bench-backup.XXXXXX)"
chmod 755 "$WORK"
PGDATA="$WORK/data"
STORE="$WORK/store"
CONFIG="$WORK/fleet.yaml"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
as_pg() { runuser -u postgres -- "$@"; }

cleanup() {
  as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m immediate -w >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$STORE/bench/wal_005"
chown -R postgres:postgres "$WORK"
cat > "$CONFIG" <<EOF
version: 1
storages:
  local: { plugin: file, path: $STORE, fsync: $FSYNC }
defaults: { storage: local, compression: $COMPRESSION, encryption: none, poolSize: $POOL_SIZE, prefetch: 0 }
servers:
  bench:
    dataDirectory: $PGDATA
    prefix: bench
    connection: { host: $WORK, port: $PORT, user: postgres, database: postgres }
EOF
chown postgres:postgres "$CONFIG"

echo "== initdb and pgbench -i -s $SCALE"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --no-sync >/dev/null
cat >> "$PGDATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
wal_level = replica
archive_mode = on
archive_command = 'true'
max_wal_size = '4GB'
EOF
as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA" -l "$WORK/postgres.log" -w >/dev/null
as_pg "$PG_BIN/pgbench" -h "$WORK" -p "$PORT" -U postgres -i -s "$SCALE" -q postgres 2>&1 | tail -1
# Filling is not what we measure: archive for real only from here on (the backup waits for its stop segment).
sed -i "s|^archive_command = 'true'|archive_command = '$WALRUS --config $CONFIG --server bench wal-push %p'|" "$PGDATA/postgresql.conf"
as_pg "$PG_BIN/psql" -h "$WORK" -p "$PORT" -U postgres -Atqc "select pg_reload_conf(); checkpoint" postgres >/dev/null
DATA_BYTES="$(du -sb "$PGDATA" | cut -f1)"
echo "data directory: $((DATA_BYTES / 1000000)) MB"

echo "== backup-push (pool size $POOL_SIZE, compression $COMPRESSION, fsync $FSYNC)"
sync
/usr/bin/time -v -o "$WORK/time.txt" node "$WALRUS" --config "$CONFIG" --server bench --log-level "${LOG_LEVEL:-warn}" backup-push --fast --json > "$WORK/summary.json"
PEAK_KB="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")"
WALL="$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt")"
CPU="$(awk -F': ' '/Percent of CPU/ {print $2}' "$WORK/time.txt")"
node -e '
const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const [peakKb, wall, cpu, scale] = process.argv.slice(2);
console.log(`backup ${s.name}: ${s.partitions} partitions`);
console.log(`expanded ${(s.expandedSizeBytes / 1e6).toFixed(0)} MB -> stored ${(s.storedBytes / 1e6).toFixed(0)} MB (${(100 * s.storedBytes / s.expandedSizeBytes).toFixed(1)}%)`);
console.log(`backup-push: ${s.seconds.toFixed(1)} s inside walrus, wall ${wall}, ${s.mbPerSecond} MB/s, CPU ${cpu}`);
console.log(`peak RSS: ${(Number(peakKb) / 1024).toFixed(0)} MiB`);
console.log(`RESULT scale=${scale} mb_per_s=${s.mbPerSecond} peak_rss_mib=${(Number(peakKb) / 1024).toFixed(0)}`);
' "$WORK/summary.json" "$PEAK_KB" "$WALL" "$CPU" "$SCALE"
