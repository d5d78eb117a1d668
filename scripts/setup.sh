#!/usr/bin/env bash
# Set up walrus on a Debian machine with Node 20: system packages the tests and the demo use
# (PostgreSQL 15, lzop, GnuPG), npm dependencies, and the compiled bin/walrus.
# Installs system packages only when missing and only as root (or with WALRUS_NO_APT=1 never).
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "walrus setup: Node.js 20 or newer is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

PG_BIN=${WALRUS_PG_BIN:-/usr/lib/postgresql/15/bin}
missing=()
[ -x "$PG_BIN/initdb" ] || missing+=(postgresql)
command -v lzop >/dev/null || missing+=(lzop)
command -v gpg >/dev/null || missing+=(gnupg)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && [ -z "${WALRUS_NO_APT:-}" ] && command -v apt-get >/dev/null; then
    echo "walrus setup: installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian's postgresql package starts a cluster on 5432; walrus's tests use their own.
  else
    echo "walrus setup: please install ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
# The codecs are native addons: make an absent one loud instead of failing at the first wal-push.
# lzo and zstd-napi build from source with node-gyp; lz4-napi and @node-rs/xxhash (the lz4 codec's
# checksums) ship their binaries in npm packages.
if ! ls node_modules/lzo/build/Release/*.node >/dev/null 2>&1; then
  echo "walrus setup: the native LZO addon (npm package lzo) did not build: install python3, make and g++ and run npm rebuild lzo" >&2
  exit 1
fi
if ! ls node_modules/zstd-napi/build/Release/*.node >/dev/null 2>&1; then
  echo "walrus setup: the native zstd addon (npm package zstd-napi) did not build: install python3, make and g++ and run npm rebuild zstd-napi" >&2
  exit 1
fi
if ! node -e "require('lz4-napi'); require('@node-rs/xxhash')" 2>/dev/null; then
  echo "walrus setup: lz4-napi or @node-rs/xxhash has no binary for this platform ($(node -p 'process.platform + "-" + process.arch')): the lz4 codec is unavailable" >&2
  exit 1
fi
npm run build --silent
