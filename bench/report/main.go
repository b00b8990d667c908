// Command report turns the output of the streamcancel benchmarks into the
// result tables of BENCHMARKS.md and the headline of README.md.
//
// It reads go test -bench output, with the "key: value" lines that
// bench/run.sh adds about the machine, takes the median of every metric
// over the -count runs, and prints Markdown. With -w it replaces the text
// between the result markers of BENCHMARKS.md and README.md instead.
//
// Usage:
//
//	go run ./bench/report [-w] [-root DIR] RESULTS
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Markers around the generated text in BENCHMARKS.md and README.md.
const (
	resultsBegin  = "<!-- results:begin (bench/run.sh writes this part) -->"
	resultsEnd    = "<!-- results:end -->"
	headlineBegin = "<!-- headline:begin (bench/run.sh writes this part) -->"
	headlineEnd   = "<!-- headline:end -->"
)

func main() {
	write := flag.Bool("w", false, "replace the generated parts of BENCHMARKS.md and README.md instead of printing them")
	root := flag.String("root", ".", "directory that contains BENCHMARKS.md and README.md")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: report [-w] [-root DIR] RESULTS\n\nRESULTS is the output of go test -bench, as bench/run.sh writes it.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}

	if err := run(flag.Arg(0), *root, *write, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(resultsPath, root string, write bool, out io.Writer) error {
	f, err := os.Open(resultsPath)
	if err != nil {
		return err
	}
	defer f.Close()

	res, err := parse(f)
	if err != nil {
		return fmt.Errorf("reading %s: %w", resultsPath, err)
	}
	results, headline := res.tables(), res.headline()

	if !write {
		fmt.Fprintln(out, results)
		fmt.Fprintln(out, headline)
		return nil
	}
	if err := replaceBetween(filepath.Join(root, "BENCHMARKS.md"), resultsBegin, resultsEnd, results); err != nil {
		return err
	}
	return replaceBetween(filepath.Join(root, "README.md"), headlineBegin, headlineEnd, headline)
}

// results holds the samples of every benchmark metric and the
// configuration lines of one results file.
type results struct {
	config  map[string]string
	samples map[string]map[string][]float64 // benchmark name, then unit
}

// procSuffix is the -GOMAXPROCS suffix that go test adds to names.
var procSuffix = regexp.MustCompile(`-\d+$`)

// configLine matches a "key: value" line of the benchmark format.
var configLine = regexp.MustCompile(`^([a-z][a-zA-Z0-9_-]*):\s*(.*)$`)

// parse reads the Go benchmark format: configuration lines and result
// lines "BenchmarkName-N  iterations  value unit  value unit ...".
func parse(r io.Reader) (*results, error) {
	res := &results{config: make(map[string]string), samples: make(map[string]map[string][]float64)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := configLine.FindStringSubmatch(line); m != nil {
			res.config[m[1]] = m[2]
			continue
		}

		fields := strings.Fields(line)
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") || len(fields)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(fields[1]); err != nil {
			continue
		}
		name := procSuffix.ReplaceAllString(fields[0], "")
		if res.samples[name] == nil {
			res.samples[name] = make(map[string][]float64)
		}
		for i := 2; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("invalid value %q in line %q", fields[i], line)
			}
			res.samples[name][fields[i+1]] = append(res.samples[name][fields[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(res.samples) == 0 {
		return nil, fmt.Errorf("no benchmark result lines found")
	}
	return res, nil
}

// median returns the median of a benchmark's metric and whether it was
// measured.
func (r *results) median(name, unit string) (float64, bool) {
	vs := append([]float64(nil), r.samples["Benchmark"+name][unit]...)
	if len(vs) == 0 {
		return 0, false
	}
	sort.Float64s(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2], true
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2, true
}

// runs returns the largest number of samples of any metric.
func (r *results) runs() int {
	n := 0
	for _, units := range r.samples {
		for _, vs := range units {
			n = max(n, len(vs))
		}
	}
	return n
}

// cell formats a median, or "n/a" when it was not measured. scale divides
// the value, such as 1000 to show µs as ms.
func (r *results) cell(name, unit string, scale float64) string {
	v, ok := r.median(name, unit)
	if !ok {
		return "n/a"
	}
	return number(v / scale)
}

// ratio formats the ratio of two medians as "N×".
func (r *results) ratio(num, numUnit, den, denUnit string) string {
	a, ok1 := r.median(num, numUnit)
	b, ok2 := r.median(den, denUnit)
	if !ok1 || !ok2 || b == 0 {
		return "n/a"
	}
	return number(a/b) + "×"
}

// ratioVerdict returns "met" or "not met" for the ratio of two medians
// against a limit, or "n/a" when either was not measured.
func (r *results) ratioVerdict(num, numUnit, den, denUnit string, limit float64) string {
	a, ok1 := r.median(num, numUnit)
	b, ok2 := r.median(den, denUnit)
	return verdictOf(a/b, ok1 && ok2 && b != 0, limit)
}

// verdict returns "met" or "not met" for a median against a limit, or
// "n/a" when it was not measured.
func (r *results) verdict(name, unit string, limit float64) string {
	v, ok := r.median(name, unit)
	return verdictOf(v, ok, limit)
}

// roundedVerdict is verdict with the median rounded to one decimal. It
// suits counts per interval, where timer jitter moves the median by a
// few percent around a whole number.
func (r *results) roundedVerdict(name, unit string, limit float64) string {
	v, ok := r.median(name, unit)
	return verdictOf(math.Round(v*10)/10, ok, limit)
}

func verdictOf(v float64, ok bool, limit float64) string {
	switch {
	case !ok:
		return "n/a"
	case v <= limit:
		return "met"
	default:
		return "**not met**"
	}
}

// number formats v with three significant digits, without exponent, and
// a whole number without decimals.
func number(v float64) string {
	switch abs := max(v, -v); {
	case v == math.Trunc(v) && abs < 1e15:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case abs >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case abs >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case abs >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// tables renders the result tables.
func (r *results) tables() string {
	var b strings.Builder
	w := func(format string, args ...interface{}) { fmt.Fprintf(&b, format+"\n", args...) }

	c := r.config
	w("Measured %s on %s: %s cores (%s), %s, Redis %s. Medians of %d runs. Load average before and after: %s; %s.",
		c["date"], c["host"], c["cores"], c["cpu"], c["go-version"], c["redis-version"], r.runs(), c["load-before"], c["load-after"])
	if commit := c["commit"]; commit != "" {
		w("")
		w("Code measured: commit %s.", commit)
	}
	if r.loaded() {
		w("")
		w("**The machine was loaded**: other processes used the CPU while the benchmarks ran, so ns/op and latency tails are noisier and higher than on a quiet machine.")
	}
	w("")

	w("### 1. Cost of the check per chunk")
	w("")
	w("| design | ns/op | B/op | allocs/op | × streamcancel |")
	w("| --- | ---: | ---: | ---: | ---: |")
	for _, row := range [][2]string{
		{"local atomic flag", "Check/local-flag"},
		{"**streamcancel `Checker.Cancelled()`**", "Check/streamcancel"},
		{"streamcancel while Redis is unreachable", "Check/streamcancel-redis-down"},
		{"every-10: `EXISTS` every 10th chunk", "Check/every-10-EXISTS"},
		{"per-chunk: `EXISTS` every chunk", "Check/per-chunk-EXISTS"},
		{"per-chunk `EXISTS` on miniredis", "Check/per-chunk-EXISTS-miniredis"},
	} {
		w("| %s | %s | %s | %s | %s |", row[0], r.cell(row[1], "ns/op", 1), r.cell(row[1], "B/op", 1), r.cell(row[1], "allocs/op", 1),
			r.ratio(row[1], "ns/op", "Check/streamcancel", "ns/op"))
	}
	w("")
	w("Target `Cancelled()` ≤ 5 ns/op: %s; 0 allocs/op: %s. "+
		"go test rounds B/op and allocs/op down to whole numbers per chunk, so every-10, which allocates only on the chunks it checks, shows a tenth of per-chunk's bytes and 0 allocations.",
		r.verdict("Check/streamcancel", "ns/op", 5), r.verdict("Check/streamcancel", "allocs/op", 0))
	w("")

	r.crossNodeSection(w)

	w("### 3. Cancel latency when the push is lost")
	w("")
	w("PollInterval 100 ms; from `Cancel` until A's `Context()` is done.")
	w("")
	w("| disruption | p50 ms | p99 ms | max ms | pushes received per cancel | target p99 ≤ 105 ms |")
	w("| --- | ---: | ---: | ---: | ---: | --- |")
	for _, row := range [][2]string{
		{"subscriber killed (`CLIENT KILL TYPE pubsub`)", "PushLost/subscriber-killed"},
		{"subscriber connection half-open (frozen proxy)", "PushLost/subscriber-half-open"},
	} {
		w("| %s | %s | %s | %s | %s | %s |", row[0], r.cell(row[1], "p50-µs", 1000), r.cell(row[1], "p99-µs", 1000),
			r.cell(row[1], "max-µs", 1000), r.cell(row[1], "pushes/cancel", 1), r.verdict(row[1], "p99-µs", 105000))
	}
	w("")

	w("### 4. Redis commands per stream")
	w("")
	w("From `INFO commandstats`. Commands are what clients send; calls also count the commands run inside scripts; round trips come from a go-redis hook.")
	w("")
	w("| design | chunks | commands | calls | round trips |")
	w("| --- | ---: | ---: | ---: | ---: |")
	for _, row := range [][3]string{
		{"**streamcancel**", "50", "CommandsPerStream/streamcancel/chunks=50"},
		{"**streamcancel**", "500", "CommandsPerStream/streamcancel/chunks=500"},
		{"**streamcancel**", "5000", "CommandsPerStream/streamcancel/chunks=5000"},
		{"**streamcancel**, stream lasting 10 PollIntervals", "500", "CommandsPerStream/streamcancel/chunks=500/paced"},
		{"streamcancel reading every PollInterval (Redis Cluster), stream lasting 10 PollIntervals", "500", "CommandsPerStream/streamcancel/chunks=500/paced/reads"},
		{"every-10 `EXISTS`", "50", "CommandsPerStream/every-10-EXISTS/chunks=50"},
		{"every-10 `EXISTS`", "500", "CommandsPerStream/every-10-EXISTS/chunks=500"},
		{"per-chunk `EXISTS`", "50", "CommandsPerStream/per-chunk-EXISTS/chunks=50"},
		{"per-chunk `EXISTS`", "500", "CommandsPerStream/per-chunk-EXISTS/chunks=500"},
	} {
		w("| %s | %s | %s | %s | %s |", row[0], row[1], r.cell(row[2], "cmds/stream", 1), r.cell(row[2], "calls/stream", 1), r.cell(row[2], "round-trips/stream", 1))
	}
	w("")
	paced, reads := "CommandsPerStream/streamcancel/chunks=500/paced", "CommandsPerStream/streamcancel/chunks=500/paced/reads"
	w("Target ≤ 4 commands for a 500-chunk stream, plus lease refreshes: %s for a stream that ends within one PollInterval, "+
		"and %s for one lasting 10 PollIntervals, which costs %s commands against 4 plus its one refresh. "+
		"While it lives, its registry publishes one probe per PollInterval for all its runs instead of reading each run's record. "+
		"Where a probe proves nothing (Redis Cluster) every PollInterval reads each run: %s commands, "+
		"though in %s round trips, because one pipeline carries the reads of all runs.",
		r.verdict("CommandsPerStream/streamcancel/chunks=500", "cmds/stream", 4),
		r.verdict(paced, "cmds/stream", 5), r.cell(paced, "cmds/stream", 1),
		r.cell(reads, "cmds/stream", 1), r.cell(reads, "round-trips/stream", 1))
	w("")

	w("### 5. Scale")
	w("")
	one, four := "ScaleOneRegistry/runs=10000", "ScaleFourRegistries/runs=10000/cancels-per-s=1000"
	w("10,000 active runs; PollInterval 200 ms, TTL 3 s (lease refresh every 1 s).")
	w("")
	w("| figure | value | target |")
	w("| --- | ---: | --- |")
	w("| registry heap per run, runs started under `context.Background()` | %s B | ≤ 1024 B: %s |", r.cell(one, "B/run", 1), r.verdict(one, "B/run", 1024))
	w("| registry heap per run, runs started under contexts that can end | %s B | ≤ 1024 B: %s |", r.cell(one, "parent-B/run", 1), r.verdict(one, "parent-B/run", 1024))
	w("| Redis memory per run | %s B | |", r.cell(one, "redis-B/run", 1))
	w("| poll round trips per PollInterval: probes + reads of all runs | %s + %s | ≤ 2, to one decimal: %s |",
		r.cell(one, "probes/poll", 1), r.cell(one, "reads/poll", 1), r.roundedVerdict(one, "poll-trips/poll", 2))
	w("| lease round trips per refresh interval | %s | ≤ 1, to one decimal: %s |", r.cell(one, "extends/refresh", 1), r.roundedVerdict(one, "extends/refresh", 1))
	w("| time of one lease refresh pipeline over all runs (a read of all runs costs the same) | %s ms | |", r.cell(one, "refresh-pass-ms", 1))
	w("| cancel latency under that load, p50 / p99 / max | %s / %s / %s µs | p99 ≤ 5 ms: %s |",
		r.cell(one, "p50-µs", 1), r.cell(one, "p99-µs", 1), r.cell(one, "max-µs", 1), r.verdict(one, "p99-µs", 5000))
	w("| four registries, cancels sent per second | %s | 1000, every one delivered (the benchmark fails otherwise) |", r.cell(four, "cancels/s", 1))
	w("| four registries, cancel latency p50 / p99 / max | %s / %s / %s µs | p99 ≤ 5 ms: %s |",
		r.cell(four, "p50-µs", 1), r.cell(four, "p99-µs", 1), r.cell(four, "max-µs", 1), r.verdict(four, "p99-µs", 5000))
	w("")

	r.slowPathSection(w)
	r.semanticsSection(w)
	return b.String()
}

// writer writes one line of Markdown from a format and its arguments.
type writer func(format string, args ...interface{})

// crossNodeSection renders section 2, the cross-node cancel latency.
func (r *results) crossNodeSection(w writer) {
	w("### 2. Cross-node cancel latency")
	cross := "CrossNodeCancel/streamcancel"
	w("")
	w("From `Cancel` on registry B until the run on registry A sees it; default options. " +
		"An observer on A is woken when the run's `Context()` is done and calls `Cancelled()` then, which must return true (the benchmark fails otherwise).")
	w("")
	w("| path | p50 µs | p99 µs | max µs |")
	w("| --- | ---: | ---: | ---: |")
	w("| raw `PUBLISH` until the subscriber receives it | %s | %s | %s |",
		r.cell("CrossNodeCancel/raw-PUBLISH", "p50-µs", 1), r.cell("CrossNodeCancel/raw-PUBLISH", "p99-µs", 1), r.cell("CrossNodeCancel/raw-PUBLISH", "max-µs", 1))
	w("| `Cancel` until A's `Context()` is done | %s | %s | %s |",
		r.cell(cross, "done-p50-µs", 1), r.cell(cross, "done-p99-µs", 1), r.cell(cross, "done-max-µs", 1))
	w("| `Cancel` until A's `Cancelled()` is true (verified true at the Done instant; upper bound) | %s | %s | %s |",
		r.cell(cross, "flip-bound-p50-µs", 1), r.cell(cross, "flip-bound-p99-µs", 1), r.cell(cross, "flip-bound-max-µs", 1))
	w("")
	w("Target, from `Cancel` until A's `Cancelled()` is true, by the upper bound above: p99 ≤ 1 ms: %s; p99 ≤ 2× the raw `PUBLISH` p99: %s (%s). "+
		"A loop sees the flip at its next check, so the time between its checks adds to these figures. Cancels whose push found no subscriber: %s.",
		r.verdict(cross, "flip-bound-p99-µs", 1000),
		r.ratioVerdict(cross, "flip-bound-p99-µs", "CrossNodeCancel/raw-PUBLISH", "p99-µs", 2),
		r.ratio(cross, "flip-bound-p99-µs", "CrossNodeCancel/raw-PUBLISH", "p99-µs"),
		r.cell(cross, "unpushed", 1))
	w("")
}

// slowPathSection renders section 6, the loop's throughput while Redis
// replies are delayed.
func (r *results) slowPathSection(w writer) {
	w("### 6. Slow path: every Redis reply delayed by 500 ms")
	w("")
	w("A chunk is the check plus about 0.5–1 µs of chunk work (SHA-256 of 1 KiB). " +
		"The streamcancel loop runs in four blocks of 1.5 s each, with the delay on, off, off and on.")
	w("")
	w("| design | ns/chunk, no delay | ns/chunk, +500 ms | change |")
	w("| --- | ---: | ---: | ---: |")
	w("| local atomic flag | %s | | |", r.cell("SlowRedis/local-flag", "ns/op", 1))
	slow := "SlowRedis/streamcancel"
	slowdown := "n/a"
	if v, ok := r.median(slow, "slowdown-%"); ok {
		slowdown = fmt.Sprintf("%+.1f %%", v)
	}
	w("| **streamcancel** | %s | %s | %s |", r.cell(slow, "direct-ns/chunk", 1), r.cell(slow, "delayed-ns/chunk", 1), slowdown)
	w("| every-10 `EXISTS` | %s | %s | %s |", r.cell("SlowRedis/every-10-EXISTS/delay=0s", "ns/op", 1),
		r.cell("SlowRedis/every-10-EXISTS/delay=500ms", "ns/op", 1),
		r.change("SlowRedis/every-10-EXISTS/delay=0s", "SlowRedis/every-10-EXISTS/delay=500ms", "ns/op"))
	w("")
	w("Target: streamcancel's loop slows by at most 1 %%: %s. "+
		"A call of the registry's client waited for its delayed reply during %s %% of the delayed blocks' time, and the benchmark fails when a delayed block has none. "+
		"With the delay, `Start` returned after %s ms and `Close` after %s ms; both wait at most 500 ms.",
		r.verdict(slow, "slowdown-%", 1), r.cell(slow, "pending-%", 1), r.cell(slow, "start-ms", 1), r.cell(slow, "close-ms", 1))
	w("")
}

// semanticsSection renders section 7, CancelAndWait and CancelGroup.
func (r *results) semanticsSection(w writer) {
	w("### 7. `CancelAndWait` and `CancelGroup`")
	w("")
	w("Calls on registry B for runs on registry A; default options. A's loop closes its run as soon as the run's `Context()` is done.")
	w("")
	wait, group := "CancelAndWait/redis", "CancelGroup/redis"
	w("| call | p50 µs | p99 µs | max µs |")
	w("| --- | ---: | ---: | ---: |")
	w("| `CancelAndWait` until it returns | %s | %s | %s |",
		r.cell(wait, "p50-µs", 1), r.cell(wait, "p99-µs", 1), r.cell(wait, "max-µs", 1))
	w("| `CancelAndWait`: A's run from the cancel's arrival until `Close` (`StopDuration`) | %s | %s | %s |",
		r.cell(wait, "stop-p50-µs", 1), r.cell(wait, "stop-p99-µs", 1), r.cell(wait, "stop-max-µs", 1))
	w("| `CancelGroup` of 3 runs until it returns | %s | %s | %s |",
		r.cell(group, "p50-µs", 1), r.cell(group, "p99-µs", 1), r.cell(group, "max-µs", 1))
	w("| `CancelGroup` of 3 runs until the last run's `Context()` is done | %s | %s | %s |",
		r.cell(group, "last-done-p50-µs", 1), r.cell(group, "last-done-p99-µs", 1), r.cell(group, "last-done-max-µs", 1))
}

// loaded reports whether the one-minute load average before the run was
// at least half the number of cores. The load after the run includes the
// benchmarks' own, so it tells nothing about other processes.
func (r *results) loaded() bool {
	cores, err := strconv.ParseFloat(r.config["cores"], 64)
	if err != nil || cores <= 0 {
		return false
	}
	first, _, _ := strings.Cut(r.config["load-before"], " ")
	load, err := strconv.ParseFloat(first, 64)
	return err == nil && load >= cores/2
}

// change formats the relative change from one median to another.
func (r *results) change(from, to, unit string) string {
	a, ok1 := r.median(from, unit)
	b, ok2 := r.median(to, unit)
	if !ok1 || !ok2 || a == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%+.1f %%", (b-a)/a*100)
}

// headline renders the README's summary of the results.
func (r *results) headline() string {
	load, _, _ := strings.Cut(r.config["load-before"], " ")
	return fmt.Sprintf("Measured on a %s-core machine with Redis %s on loopback (%s, load average %s at the start): "+
		"`Cancelled()` costs %s ns per chunk with no allocation, against %s ns for an `EXISTS` on every chunk (%s) "+
		"and %s ns for an `EXISTS` on every 10th chunk (%s). "+
		"A cancel from another node makes `Cancelled()` return true and ends the run's context within %s µs at p99 (%s a raw `PUBLISH` on the same server). "+
		"A 500-chunk stream sends %s Redis commands, or %s in %s round trips when it lasts 10 PollIntervals, against %s for every-10 and %s for per-chunk. "+
		"Details and the command that reproduces them: [BENCHMARKS.md](BENCHMARKS.md).",
		r.config["cores"], r.config["redis-version"], r.config["date"], load,
		r.cell("Check/streamcancel", "ns/op", 1),
		r.cell("Check/per-chunk-EXISTS", "ns/op", 1),
		r.ratio("Check/per-chunk-EXISTS", "ns/op", "Check/streamcancel", "ns/op"),
		r.cell("Check/every-10-EXISTS", "ns/op", 1),
		r.ratio("Check/every-10-EXISTS", "ns/op", "Check/streamcancel", "ns/op"),
		r.cell("CrossNodeCancel/streamcancel", "flip-bound-p99-µs", 1),
		r.ratio("CrossNodeCancel/streamcancel", "flip-bound-p99-µs", "CrossNodeCancel/raw-PUBLISH", "p99-µs"),
		r.cell("CommandsPerStream/streamcancel/chunks=500", "cmds/stream", 1),
		r.cell("CommandsPerStream/streamcancel/chunks=500/paced", "cmds/stream", 1),
		r.cell("CommandsPerStream/streamcancel/chunks=500/paced", "round-trips/stream", 1),
		r.cell("CommandsPerStream/every-10-EXISTS/chunks=500", "cmds/stream", 1),
		r.cell("CommandsPerStream/per-chunk-EXISTS/chunks=500", "cmds/stream", 1))
}

// replaceBetween replaces the text between the lines begin and end of the
// file at path with text.
func replaceBetween(path, begin, end, text string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(data)
	i := strings.Index(s, begin)
	j := strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s: the markers %q and %q are missing or out of order; restore them around the generated part", path, begin, end)
	}
	s = s[:i+len(begin)] + "\n" + text + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
