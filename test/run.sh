#!/usr/bin/env bash
# The whole test suite on any machine, fresh or not (this is `npm test`):
#   1. installs ZooKeeper, redis-server, redis-sentinel, haproxy (and systemd for systemd-analyze),
#      iproute2 and nftables (the partition suite's `ip` and `nft`) with apt-get when missing,
#   2. runs `npm ci` when node_modules is missing or older than package-lock.json,
#   3. builds (`npm run build`: the integration tests run the built dictator),
#   4. runs every vitest project (unit, integration, chaos, partition); its exit code is ours.
#
#   bash test/run.sh                 set up, build, test
#   bash test/run.sh --setup-only    steps 1 and 2 only (used by .ci/run and examples/demo.sh)
#   bash test/run.sh -- ARGS…        extra arguments for `vitest run` (e.g. --project unit)
#
# Idempotent; needs no stdin (CI=true is fine). Test servers always run on free ports of
# 127.0.0.1, never on the default 2181/6379, so a system ZooKeeper or Redis does not get in the way.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

setup_only=0
vitest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --setup-only) setup_only=1 ;;
    --) shift; vitest_args+=("$@"); break ;;
    *) vitest_args+=("$1") ;;
  esac
  shift
done

log() { printf '\n==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    echo "test/run.sh: need root (or sudo) to run: $*" >&2
    return 1
  fi
}

zookeeper_present() {
  [ -n "${ZOOKEEPER_CLASSPATH:-}" ] || [ -f /usr/share/java/zookeeper.jar ]
}

missing_servers() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
  zookeeper_present || missing+=(zookeeper)
  command -v java >/dev/null 2>&1 || missing+=(java)
  # The load-balancer test (test/integration/haproxy.test.ts) runs a real HAProxy.
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
  # test/examples.test.ts runs `systemd-analyze verify` on examples/dictator.service.
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  # The partition suite makes namespaces and cuts with `ip` and `nft`.
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  # redis-py, for the Sentinel-compatible endpoint's client test (Debian's python3).
  /usr/bin/python3 -c "import redis" >/dev/null 2>&1 || missing+=(python3-redis)
  # The TLS tests make their certificates with it.
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  echo "${missing[@]+"${missing[@]}"}"
}

install_servers() {
  local missing
  missing="$(missing_servers)"
  if [ -z "$missing" ]; then
    log "ZooKeeper, redis-server, redis-sentinel, haproxy, ip and nft are installed"
    return 0
  fi
  log "missing: $missing — installing with apt-get"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test/run.sh: no apt-get here; install ZooKeeper (or set ZOOKEEPER_CLASSPATH), redis-server and redis-sentinel yourself (or use 'nix develop')" >&2
    return 1
  fi

  # Keep the packages' maintainer scripts from starting services (Debian's policy-rc.d
  # convention): a system redis or ZooKeeper must not sit on ports while the tests run.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    created_policy=1
  fi

  # Debian's systemd only for systemd-analyze, and only when it is missing (never an upgrade of
  # the host's systemd). Installing it starts nothing: without systemd as PID 1 its scripts only
  # create users and files, and policy-rc.d above stops the rest.
  local extra=()
  command -v systemd-analyze >/dev/null 2>&1 || extra+=(systemd)

  local ok=0 attempt
  for attempt in 1 2 3; do
    if as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        zookeeper redis-server redis-sentinel haproxy iproute2 nftables python3-redis openssl ${extra[@]+"${extra[@]}"} </dev/null; then
      ok=1
      break
    fi
    echo "apt-get failed (attempt $attempt), retrying…" >&2
    sleep $((attempt * 5))
  done

  if [ "$created_policy" -eq 1 ]; then as_root rm -f "$policy"; fi
  [ "$ok" -eq 1 ] || { echo "test/run.sh: apt-get install failed" >&2; return 1; }

  # Belt and braces: where systemd runs, make sure nothing the install enabled is running.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl stop redis-server.service redis-sentinel.service zookeeper.service haproxy.service >/dev/null 2>&1 || true
  fi

  missing="$(missing_servers)"
  if [ -n "$missing" ]; then
    echo "test/run.sh: still missing after apt-get: $missing" >&2
    return 1
  fi
}

install_node_modules() {
  # npm writes node_modules/.package-lock.json on every install: it is the stamp.
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    log "npm ci"
    npm ci --no-audit --no-fund </dev/null
  else
    log "node_modules is up to date"
  fi
}

install_servers
install_node_modules

if [ "$setup_only" -eq 1 ]; then
  exit 0
fi

log "npm run build"
npm run build </dev/null

log "vitest run ${vitest_args[*]+"${vitest_args[*]}"}"
status=0
results=.vitest-tmp/results.json
mkdir -p .vitest-tmp
rm -f "$results" .vitest-tmp/summary.txt
npx vitest run --reporter=default --reporter=json --outputFile.json="$results" \
  ${vitest_args[@]+"${vitest_args[@]}"} </dev/null || status=$?
# One plain closing line with the counts, whatever the reporter printed above it.
if [ -f "$results" ]; then
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))
    console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""))
  ' "$results" | tee .vitest-tmp/summary.txt
fi
exit "$status"
