#!/usr/bin/env bash
# Runs every streamcancel benchmark, writes the raw results to
# bench/results.txt and the benchstat summary to bench/benchstat.txt, and
# prints the result tables of BENCHMARKS.md. With -w it also writes those
# tables into BENCHMARKS.md and the headline into README.md.
#
# Usage: bench/run.sh [-w] [COUNT]
#
# COUNT is the number of runs of each benchmark (default 6); the tables
# show medians. The benchmarks start their own redis-server on loopback
# ports, so redis-server must be on PATH. The whole run takes about 5
# minutes with COUNT 6 on a 2-core machine.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

write=0
if [[ ${1:-} == -w ]]; then
	write=1
	shift
fi
count=${1:-6}

# benchstat comes from the Go module proxy, at a fixed version.
readonly benchstat=golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

results=bench/results.txt

# The commit is read before the run writes its own files.
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD 2>/dev/null; then
	commit+=" (with uncommitted changes)"
fi
export STREAMCANCEL_REQUIRE_REDIS=1

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "host: $(uname -sm)"
	echo "cores: $(nproc)"
	echo "go-version: $(go env GOVERSION)"
	echo "redis-version: $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/')"
	echo "commit: $commit"
	echo "load-before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$results"

# The check and slow-path benchmarks measure nanoseconds per chunk, so they
# run for a time. Every other benchmark counts its op as one cancel or one
# stream: 1000 cancels give the latency percentiles, and 100 streams give
# exact command counts. CancelAndWait and CancelGroup run here only against
# a redis-server. Their miniredis cases are for CI.
run() {
	echo "=== go test -bench '$1' $2" >&2
	go test -run '^$' -bench "$1" "$2" -count "$count" -benchmem -timeout 60m . | tee -a "$results" >&2
}
run '^Benchmark(Check|SlowRedis)$' -benchtime=1s
run '^Benchmark(CrossNodeCancel|PushLost|ScaleOneRegistry|ScaleFourRegistries)$' -benchtime=1000x
run '^Benchmark(CancelAndWait|CancelGroup)$/^redis$' -benchtime=1000x
run '^BenchmarkCommandsPerStream$' -benchtime=100x

echo "load-after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$results"

go run "$benchstat" "$results" >bench/benchstat.txt
if [[ $write == 1 ]]; then
	go run ./bench/report -w "$results"
	echo "wrote BENCHMARKS.md and README.md from $results" >&2
else
	go run ./bench/report "$results"
fi
