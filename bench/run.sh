#!/usr/bin/env bash
# The failover benchmark (this is `npm run bench`): Dictator against Redis Sentinel on this
# machine. Installs what is missing (ZooKeeper, redis-server, redis-sentinel, node_modules),
# builds, then runs dist/bench/failover.js with our arguments:
#
#   bash bench/run.sh                         every case, 5 rounds each (about 10 minutes)
#   bash bench/run.sh --rounds 3 --cases dictator-handover,sentinel-redis-killed
#   bash bench/run.sh --partition [--rounds N]  the partition comparison (bench/partition.ts; root)
#   bash bench/run.sh --cases footprint [--minutes M] [--nodes K]  idle footprint (bench/footprint.ts)
#   bash bench/run.sh --cases scale [--services N] [--idle-seconds S]  N services × 3 nodes (bench/scale.ts)
#   bash bench/run.sh --cases footprint,scale [both's flags]      the footprint, then the scale benchmark
#   bash bench/run.sh --zk-outage [--rounds N]  writes blocked by a 20 s ZooKeeper outage, failsafe off/on (bench/zkoutage.ts)
#   bash bench/run.sh --help
#
# Prints a table and writes bench/results/<date>.json.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash test/run.sh --setup-only
printf '\n==> npm run build\n' >&2
npm run build </dev/null
if [ "${1:-}" = "--partition" ]; then
  # Issue 8's scenario 1 on network namespaces (root, iproute2, nftables): bench/partition.ts.
  shift
  printf '\n==> node dist/bench/partition.js %s\n' "$*" >&2
  exec node dist/bench/partition.js "$@"
fi
if [ "${1:-}" = "--zk-outage" ]; then
  # Issue 13: the whole ensemble stopped under a write load, failsafe mode off and on.
  shift
  printf '\n==> node dist/bench/zkoutage.js %s\n' "$*" >&2
  exec node dist/bench/zkoutage.js "$@"
fi
# --cases footprint: the idle footprint (bench/footprint.ts), not a failover case; --cases scale
# (alone or as footprint,scale): the scale benchmark (bench/scale.ts, which runs footprint first).
runner=failover
for ((i = 1; i <= $#; i++)); do
  arg="${!i}"
  next=$((i + 1))
  case "$arg" in
    --cases=*) cases="${arg#--cases=}" ;;
    --cases) cases="${!next:-}" ;;
    *) continue ;;
  esac
  case ",$cases," in
    *,scale,*) runner=scale ;;
    *,footprint,*) runner=footprint ;;
  esac
done
if [ "$runner" != failover ]; then
  printf '\n==> node dist/bench/%s.js %s\n' "$runner" "$*" >&2
  exec node "dist/bench/$runner.js" "$@"
fi
printf '\n==> node dist/bench/failover.js %s\n' "$*" >&2
exec node dist/bench/failover.js "$@"
