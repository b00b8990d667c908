package streamcancel_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamcancel/streamcancel"
	"github.com/streamcancel/streamcancel/internal/faultproxy"
	"github.com/streamcancel/streamcancel/internal/redistest"
)

// The benchmarks compare streamcancel with the designs it replaces. These
// baselines exist only here, never in the library:
//
//   - per-chunk: EXISTS on a cancel key after every chunk;
//   - every-10: EXISTS on every 10th chunk, synchronously;
//   - local flag: an atomic flag in one process, the floor for any check.
//
// Each benchmark starts its own redis-server on a loopback port, so that
// INFO commandstats counts only its own commands and no other test's load
// shares the server. BENCHMARKS.md lists the results and bench/run.sh
// reproduces them.

// benchWaitLimit bounds every wait for a cancel to arrive. A cancel that
// takes longer is a correctness failure, not a slow sample.
const benchWaitLimit = 5 * time.Second

// benchServer starts a redis-server for one benchmark and returns it with
// an admin client for INFO, CONFIG and CLIENT commands.
func benchServer(b *testing.B) (*redistest.Server, *redis.Client) {
	b.Helper()
	srv := redistest.StartServer(b)
	return srv, benchClient(b, srv.Addr())
}

// benchClient returns a client of addr with go-redis default options,
// closed when the benchmark ends.
func benchClient(tb testing.TB, addr string, hooks ...redis.Hook) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	for _, h := range hooks {
		c.AddHook(h)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// benchRegistry returns a registry named node on rdb, closed when the
// benchmark ends, once its subscriber is confirmed.
func benchRegistry(tb testing.TB, rdb redis.UniversalClient, node string, opts ...streamcancel.Option) *streamcancel.Registry {
	tb.Helper()
	base := []streamcancel.Option{streamcancel.WithNodeID(node), streamcancel.WithKeyPrefix("bench")}
	r, err := streamcancel.NewRegistry(rdb, append(base, opts...)...)
	if err != nil {
		tb.Fatalf("NewRegistry: %v", err)
	}
	tb.Cleanup(func() { _ = r.Close() })
	awaitSubscribed(tb, r)
	return r
}

// awaitSubscribed waits until r's subscriber is confirmed.
func awaitSubscribed(tb testing.TB, r *streamcancel.Registry) {
	tb.Helper()
	deadline := time.Now().Add(benchWaitLimit)
	for !r.Stats().Subscribed {
		if time.Now().After(deadline) {
			tb.Fatalf("the subscriber of node %q was not confirmed within %v", r.NodeID(), benchWaitLimit)
		}
		time.Sleep(time.Millisecond)
	}
}

// benchProxy returns a fault proxy to addr, closed when the benchmark ends.
func benchProxy(tb testing.TB, addr string) *faultproxy.Proxy {
	p, err := faultproxy.New(addr)
	if err != nil {
		tb.Fatalf("faultproxy.New: %v", err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// quietRedisLog silences go-redis's own log until the benchmark ends. It
// prints a line for every Pub/Sub connection it drops, and those lines
// would split the benchmark's result lines.
func quietRedisLog(tb testing.TB) {
	redis.SetLogger(redisLogger{log.New(io.Discard, "", 0)})
	tb.Cleanup(func() {
		redis.SetLogger(redisLogger{log.New(os.Stderr, "redis: ", log.LstdFlags|log.Lshortfile)})
	})
}

// redisLogger writes go-redis's log lines to a standard logger, in the
// format go-redis uses by default.
type redisLogger struct {
	out *log.Logger
}

func (l redisLogger) Printf(_ context.Context, format string, v ...interface{}) {
	_ = l.out.Output(2, fmt.Sprintf(format, v...))
}

// existsCheck is the cancel check of the per-chunk and every-10 designs:
// on every every-th chunk it sends EXISTS for the stream's cancel key and
// waits for the reply. A Redis error reads as not canceled.
type existsCheck struct {
	rdb    *redis.Client
	key    string
	every  int
	chunks int
}

func (c *existsCheck) Cancelled(ctx context.Context) bool {
	c.chunks++
	if c.chunks%c.every != 0 {
		return false
	}
	n, err := c.rdb.Exists(ctx, c.key).Result()
	return err == nil && n > 0
}

// existsStream is one run of a polling design. Its lifecycle costs three
// commands: Start sets the active key with a TTL and deletes a stale
// cancel key, so that a reused stream ID does not inherit an old cancel,
// and Close deletes both keys.
type existsStream struct {
	existsCheck
	active string
}

func startExistsStream(ctx context.Context, rdb *redis.Client, id string, every int) (*existsStream, error) {
	s := &existsStream{
		existsCheck: existsCheck{rdb: rdb, key: "baseline:" + id + ":cancel", every: every},
		active:      "baseline:" + id + ":active",
	}
	if err := rdb.Set(ctx, s.active, "node-a", 30*time.Second).Err(); err != nil {
		return nil, err
	}
	if err := rdb.Del(ctx, s.key).Err(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *existsStream) Close(ctx context.Context) error {
	return s.rdb.Del(ctx, s.active, s.key).Err()
}

// latencies collects the samples of one latency figure.
type latencies []time.Duration

// percentile returns the nearest-rank p-th percentile, 0 < p <= 100.
func (l latencies) percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	sorted := append(latencies(nil), l...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })

	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// report reports the p50, p99 and maximum in µs as metrics named
// prefix+"p50-µs" and so on.
func (l latencies) report(b *testing.B, prefix string) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(l.percentile(50)), prefix+"p50-µs")
	b.ReportMetric(us(l.percentile(99)), prefix+"p99-µs")
	b.ReportMetric(us(l.percentile(100)), prefix+"max-µs")
}

// doneAt returns a channel that receives the time at which ctx ends.
func doneAt(ctx context.Context) <-chan time.Time {
	at := make(chan time.Time, 1)
	context.AfterFunc(ctx, func() { at <- time.Now() })
	return at
}

// awaitTime receives from at, or fails the benchmark after
// benchWaitLimit, naming the event.
func awaitTime(b *testing.B, at <-chan time.Time, event string) time.Time {
	b.Helper()
	select {
	case t := <-at:
		return t
	case <-time.After(benchWaitLimit):
		b.Fatalf("%s did not happen within %v", event, benchWaitLimit)
		return time.Time{}
	}
}

// resetCommandStats clears the server's command counters.
func resetCommandStats(b *testing.B, admin *redis.Client) {
	b.Helper()
	if err := admin.ConfigResetStat(context.Background()).Err(); err != nil {
		b.Fatalf("CONFIG RESETSTAT: %v", err)
	}
}

// commandCalls returns the number of calls of each command since the last
// CONFIG RESETSTAT, read from INFO commandstats. INFO and CONFIG are left
// out because the benchmark sends them itself.
func commandCalls(b *testing.B, admin *redis.Client) map[string]int64 {
	b.Helper()
	info, err := admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatalf("INFO commandstats: %v", err)
	}

	calls := make(map[string]int64)
	for _, line := range strings.Split(info, "\n") {
		// A line reads "cmdstat_evalsha:calls=12,usec=80,...".
		name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd || name == "info" || strings.HasPrefix(name, "config") {
			continue
		}
		field, _, _ := strings.Cut(stats, ",")
		n, err := strconv.ParseInt(strings.TrimPrefix(field, "calls="), 10, 64)
		if err != nil {
			b.Fatalf("INFO commandstats: unexpected line %q", line)
		}
		calls[name] = n
	}
	return calls
}

// scriptCalls are the commands that the library's scripts run: the ACL
// list of libraryCommands without those a client sends itself. INFO
// commandstats counts a command run inside a script as a call of its own,
// next to the EVALSHA or EVAL that ran it. HGET is also sent by
// CancelAndWait, which these benchmarks do not call.
var scriptCalls = func() []string {
	var inside []string
	for _, cmd := range libraryCommands {
		switch cmd {
		case "evalsha", "eval", "script|load", "subscribe", "ping":
		default:
			inside = append(inside, cmd)
		}
	}
	return inside
}()

// sentCommands returns how many commands clients sent, out of calls:
// calls less the commands run inside scripts. When no script ran, every
// call was sent by a client.
func sentCommands(calls map[string]int64) int64 {
	sent := totalCalls(calls)
	if calls["evalsha"]+calls["eval"] == 0 {
		return sent
	}
	for _, name := range scriptCalls {
		sent -= calls[name]
	}
	return sent
}

// totalCalls sums calls over all commands.
func totalCalls(calls map[string]int64) int64 {
	var total int64
	for _, n := range calls {
		total += n
	}
	return total
}

// usedMemory returns the server's used_memory from INFO memory, in bytes.
func usedMemory(b *testing.B, admin *redis.Client) int64 {
	b.Helper()
	info, err := admin.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatalf("INFO memory: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatalf("INFO memory: unexpected line %q", line)
			}
			return n
		}
	}
	b.Fatalf("INFO memory has no used_memory line")
	return 0
}

// roundTrips is a go-redis hook that counts round trips: single commands,
// and pipelines by the sync.lua mode of their first command. The registry
// sends its polls ("read"), lease refreshes ("extend") and registrations
// ("register") as pipelines of sync.lua calls whose last argument is the
// mode.
type roundTrips struct {
	single    atomic.Int64
	pipelines atomic.Int64

	// publishes counts the PUBLISH commands the client sent itself, the
	// registry's probes, as opposed to those its scripts run.
	publishes atomic.Int64

	mu       sync.Mutex
	byMode   map[string]int64
	first    map[string]time.Time
	last     map[string]time.Time
	passTime map[string]time.Duration
}

// syncMode returns the mode of a sync.lua call, whose arguments are
// EVALSHA, the SHA, the key count, the keys, then the token, the node ID,
// the lease and the mode. It returns "other" for any other command.
func syncMode(args []interface{}) string {
	const modeArg = 3
	if len(args) < 3 {
		return "other"
	}
	numKeys, ok := args[2].(int)
	if !ok || len(args) <= 3+numKeys+modeArg {
		return "other"
	}
	switch mode := fmt.Sprint(args[3+numKeys+modeArg]); mode {
	case "read", "extend", "register", "takeover":
		return mode
	}
	return "other"
}

func newRoundTrips() *roundTrips {
	h := &roundTrips{}
	h.reset()
	return h
}

// reset clears the counts of pipelines.
func (h *roundTrips) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byMode = make(map[string]int64)
	h.first = make(map[string]time.Time)
	h.last = make(map[string]time.Time)
	h.passTime = make(map[string]time.Duration)
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.single.Add(1)
		if cmd.Name() == "publish" {
			h.publishes.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		took := time.Since(start)

		mode := "other"
		if len(cmds) > 0 {
			mode = syncMode(cmds[0].Args())
		}

		h.pipelines.Add(1)
		h.mu.Lock()
		defer h.mu.Unlock()
		h.byMode[mode]++
		if h.first[mode].IsZero() {
			h.first[mode] = start
		}
		h.last[mode] = start
		h.passTime[mode] += took
		return err
	}
}

// modeCount returns how many pipelines of the mode were sent.
func (h *roundTrips) modeCount(mode string) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byMode[mode]
}

// perInterval returns how many pipelines of the mode were sent per
// interval, between the first and the last one. Counting between
// pipelines rather than over a window keeps a short window from adding or
// losing one.
func (h *roundTrips) perInterval(mode string, interval time.Duration) float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	span := h.last[mode].Sub(h.first[mode])
	if h.byMode[mode] < 2 || span <= 0 {
		return 0
	}
	return float64(h.byMode[mode]-1) * float64(interval) / float64(span)
}

// meanPass returns the mean duration of the pipelines of the mode.
func (h *roundTrips) meanPass(mode string) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byMode[mode] == 0 {
		return 0
	}
	return h.passTime[mode] / time.Duration(h.byMode[mode])
}
