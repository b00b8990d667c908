package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `date: 2026-12-04 22:35 UTC
cores: 2
redis: 2026/12/04 22:30:44 pubsub.go:168: a go-redis log line
goos: linux
BenchmarkCheck/streamcancel-2   	486981502	         2.668 ns/op	       0 B/op	       0 allocs/op
BenchmarkCheck/streamcancel-2   	486981502	         9.000 ns/op	       0 B/op	       0 allocs/op
BenchmarkCheck/streamcancel-2   	486981502	         2.500 ns/op	       0 B/op	       0 allocs/op
BenchmarkCheck/per-chunk-EXISTS-2	   53983	     25000 ns/op	     168 B/op	       6 allocs/op
BenchmarkCheck/per-chunk-EXISTS-2	   53983	     27000 ns/op	     168 B/op	       6 allocs/op
BenchmarkCheck/per-chunk-EXISTS-2	   53983	  BROKEN
PASS
`

func TestParseMedians(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, unit string
		want       float64
	}{
		{"Check/streamcancel", "ns/op", 2.668},
		{"Check/streamcancel", "allocs/op", 0},
		{"Check/per-chunk-EXISTS", "ns/op", 26000},
	} {
		got, ok := res.median(tc.name, tc.unit)
		if !ok || got != tc.want {
			t.Errorf("median(%q, %q) = %v, %v; want %v", tc.name, tc.unit, got, ok, tc.want)
		}
	}
	if _, ok := res.median("Check/streamcancel", "p99-µs"); ok {
		t.Errorf("median of an unmeasured unit reported as measured")
	}
	if got := res.runs(); got != 3 {
		t.Errorf("runs() = %d, want 3", got)
	}
	if got := res.config["cores"]; got != "2" {
		t.Errorf("config cores = %q, want 2", got)
	}
}

func TestParseRejectsEmpty(t *testing.T) {
	if _, err := parse(strings.NewReader("goos: linux\nPASS\n")); err == nil {
		t.Fatal("parse of output without results succeeded, want an error")
	}
}

func TestVerdictAndRatio(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}

	if got := res.verdict("Check/streamcancel", "ns/op", 5); got != "met" {
		t.Errorf("verdict at 2.668 against 5 = %q, want met", got)
	}
	if got := res.verdict("Check/per-chunk-EXISTS", "ns/op", 5); got != "**not met**" {
		t.Errorf("verdict at 26000 against 5 = %q, want **not met**", got)
	}
	if got := res.ratio("Check/per-chunk-EXISTS", "ns/op", "Check/streamcancel", "ns/op"); got != "9745×" {
		t.Errorf("ratio = %q, want 9745×", got)
	}
	if got := res.cell("Check/missing", "ns/op", 1); got != "n/a" {
		t.Errorf("cell of a missing benchmark = %q, want n/a", got)
	}
}

func TestReplaceBetween(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	before := "# Title\n" + resultsBegin + "\nold\n" + resultsEnd + "\nprose\n"
	if err := os.WriteFile(path, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := replaceBetween(path, resultsBegin, resultsEnd, "new"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "# Title\n" + resultsBegin + "\nnew\n" + resultsEnd + "\nprose\n"
	if string(got) != want {
		t.Errorf("file after replace = %q, want %q", got, want)
	}

	if err := os.WriteFile(path, []byte("no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := replaceBetween(path, resultsBegin, resultsEnd, "new"); err == nil {
		t.Error("replace in a file without markers succeeded, want an error")
	}
}

func TestLoadedMachine(t *testing.T) {
	for _, tc := range []struct {
		cores, before, after string
		want                 bool
	}{
		{"2", "0.20 0.30 0.40", "0.50 0.30 0.40", false},
		{"2", "2.62 4.35 2.87", "0.50 0.30 0.40", true},
		{"2", "0.20 0.30 0.40", "1.90 0.30 0.40", false},
		{"", "9.00 9.00 9.00", "9.00 9.00 9.00", false},
	} {
		res := &results{config: map[string]string{"cores": tc.cores, "load-before": tc.before, "load-after": tc.after}}
		if got := res.loaded(); got != tc.want {
			t.Errorf("loaded() with %s cores, load %q and %q = %v, want %v", tc.cores, tc.before, tc.after, got, tc.want)
		}
	}
}

func TestCommandsVerdictCoversLongStreams(t *testing.T) {
	const commands = `BenchmarkCommandsPerStream/streamcancel/chunks=500-2 	 100	 184384 ns/op	 13.00 calls/stream	 2.000 cmds/stream	 2.000 round-trips/stream
BenchmarkCommandsPerStream/streamcancel/chunks=500/paced-2 	 100	 2195120 ns/op	 16.40 calls/stream	 5.400 cmds/stream	 2.230 round-trips/stream
BenchmarkCommandsPerStream/streamcancel/chunks=500/paced/reads-2 	 100	 2206142 ns/op	 38.67 calls/stream	 14.21 cmds/stream	 2.240 round-trips/stream
`
	res, err := parse(strings.NewReader(commands))
	if err != nil {
		t.Fatal(err)
	}

	tables := res.tables()
	want := "met for a stream that ends within one PollInterval, and **not met** for one lasting 10 PollIntervals, which costs 5.40 commands against 4 plus its one refresh."
	if !strings.Contains(tables, want) {
		t.Errorf("tables() lack the verdict on long streams %q; they read:\n%s", want, tables)
	}
	if want := "every PollInterval reads each run: 14.2 commands, though in 2.24 round trips"; !strings.Contains(tables, want) {
		t.Errorf("tables() lack the cost of reading every PollInterval %q; they read:\n%s", want, tables)
	}
	if headline := res.headline(); !strings.Contains(headline, "sends 2 Redis commands, or 5.40 in 2.23 round trips when it lasts 10 PollIntervals") {
		t.Errorf("headline() lacks the command count of a long stream; it reads:\n%s", headline)
	}
}

func TestCrossNodeVerdictUsesFlipBound(t *testing.T) {
	const cross = `BenchmarkCrossNodeCancel/raw-PUBLISH-2 	 1000	 80462 ns/op	 330.9 max-µs	 80.89 p50-µs	 138.7 p99-µs
BenchmarkCrossNodeCancel/streamcancel-2 	 1000	 364765 ns/op	 268.8 done-max-µs	 119.0 done-p50-µs	 187.4 done-p99-µs	 320.0 flip-bound-max-µs	 119.1 flip-bound-p50-µs	 290.0 flip-bound-p99-µs	 0 unpushed
`
	res, err := parse(strings.NewReader(cross))
	if err != nil {
		t.Fatal(err)
	}

	tables := res.tables()
	for _, want := range []string{
		"| `Cancel` until A's `Context()` is done | 119 | 187 | 269 |",
		"| `Cancel` until A's `Cancelled()` is true (verified true at the Done instant; upper bound) | 119 | 290 | 320 |",
		"by the upper bound above: p99 ≤ 1 ms: met; p99 ≤ 2× the raw `PUBLISH` p99: **not met** (2.09×).",
	} {
		if !strings.Contains(tables, want) {
			t.Errorf("tables() lack %q; they read:\n%s", want, tables)
		}
	}
	if headline := res.headline(); !strings.Contains(headline, "ends the run's context within 290 µs at p99 (2.09× a raw `PUBLISH`") {
		t.Errorf("headline() lacks the flip bound; it reads:\n%s", headline)
	}
}

func TestCrossNodeIgnoresSleepingLoopFlip(t *testing.T) {
	// Results from before the flip bound: flip-p99-µs was read by a loop
	// that slept between checks and means something else.
	const old = "BenchmarkCrossNodeCancel/streamcancel-2 \t 1000\t 386446 ns/op\t 183.0 done-p99-µs\t 1166 flip-p99-µs\n"
	res, err := parse(strings.NewReader(old))
	if err != nil {
		t.Fatal(err)
	}
	want := "| `Cancel` until A's `Cancelled()` is true (verified true at the Done instant; upper bound) | n/a | n/a | n/a |"
	if tables := res.tables(); !strings.Contains(tables, want) {
		t.Errorf("tables() lack %q; they read:\n%s", want, tables)
	}
}

func TestRatioVerdict(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}

	if got := res.ratioVerdict("Check/streamcancel", "ns/op", "Check/streamcancel", "ns/op", 2); got != "met" {
		t.Errorf("ratioVerdict at 1× against 2 = %q, want met", got)
	}
	if got := res.ratioVerdict("Check/per-chunk-EXISTS", "ns/op", "Check/streamcancel", "ns/op", 2); got != "**not met**" {
		t.Errorf("ratioVerdict at 9745× against 2 = %q, want **not met**", got)
	}
	if got := res.ratioVerdict("Check/missing", "ns/op", "Check/streamcancel", "ns/op", 2); got != "n/a" {
		t.Errorf("ratioVerdict of a missing benchmark = %q, want n/a", got)
	}
}

func TestSemanticsSection(t *testing.T) {
	const lines = `BenchmarkCancelAndWait/redis-2 	 1000	 364286 ns/op	 3182 max-µs	 250.6 p50-µs	 413.2 p99-µs	 68.00 stop-max-µs	 2.000 stop-p50-µs	 34.00 stop-p99-µs
BenchmarkCancelGroup/redis-2 	 1000	 1116961 ns/op	 1447 last-done-max-µs	 210.1 last-done-p50-µs	 324.8 last-done-p99-µs	 1453 max-µs	 193.7 p50-µs	 330.0 p99-µs
`
	res, err := parse(strings.NewReader(lines))
	if err != nil {
		t.Fatal(err)
	}

	tables := res.tables()
	for _, want := range []string{
		"| `CancelAndWait` until it returns | 251 | 413 | 3182 |",
		"| `CancelAndWait`: A's run from the cancel's arrival until `Close` (`StopDuration`) | 2 | 34 | 68 |",
		"| `CancelGroup` of 3 runs until it returns | 194 | 330 | 1453 |",
		"| `CancelGroup` of 3 runs until the last run's `Context()` is done | 210 | 325 | 1447 |",
	} {
		if !strings.Contains(tables, want) {
			t.Errorf("tables() lack %q; they read:\n%s", want, tables)
		}
	}
}

func TestSlowPathSection(t *testing.T) {
	const line = "BenchmarkSlowRedis/streamcancel-2 \t 1\t 6001681829 ns/op\t 500.3 close-ms\t 672.1 delayed-ns/chunk\t 676.6 direct-ns/chunk\t 45.10 pending-%\t -0.6691 slowdown-%\t 500.8 start-ms\n"
	res, err := parse(strings.NewReader(line))
	if err != nil {
		t.Fatal(err)
	}

	tables := res.tables()
	for _, want := range []string{
		"| **streamcancel** | 677 | 672 | -0.7 % |",
		"waited for its delayed reply during 45.1 % of the delayed blocks' time",
	} {
		if !strings.Contains(tables, want) {
			t.Errorf("tables() lack %q; they read:\n%s", want, tables)
		}
	}
}
