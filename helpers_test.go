package streamcancel_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/streamcancel/streamcancel"
	"github.com/streamcancel/streamcancel/internal/faultproxy"
	"github.com/streamcancel/streamcancel/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis keeps redialing once a second for up to a second after a
		// client whose dials failed is closed. The goroutine is go-redis's,
		// not the registry's.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
	)
}

// env is one Redis that a test runs against: a miniredis or a real
// redis-server.
type env struct {
	addr   string
	prefix string
	mini   *miniredis.Miniredis // nil on a real server
	server *redistest.Server    // non-nil on a server the test owns
}

// eachBackend runs fn on a miniredis and on the shared real Redis, under a
// key prefix of its own.
func eachBackend(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("miniredis", func(t *testing.T) {
		m := miniredis.RunT(t)
		fn(t, &env{addr: m.Addr(), prefix: "sctest", mini: m})
	})
	t.Run("redis", func(t *testing.T) {
		fn(t, sharedEnv(t))
	})
}

// sharedEnv returns an env on the shared real Redis under a key prefix of
// the test's own.
func sharedEnv(t *testing.T) *env {
	c := redistest.Shared(t)
	return &env{addr: c.Options().Addr, prefix: redistest.UniquePrefix(t)}
}

// ownServer returns an env on a redis-server that the test starts, so it
// may stop, restart or reconfigure it.
func ownServer(t *testing.T, args ...string) *env {
	srv := redistest.StartServer(t, args...)
	return &env{addr: srv.Addr(), prefix: "sctest", server: srv}
}

// client returns a new client of e, closed when the test ends.
func (e *env) client(t *testing.T) *redis.Client {
	return clientAt(t, e.addr)
}

func clientAt(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// registry returns a registry named node on a client of its own, closed
// when the test ends.
func (e *env) registry(t *testing.T, node string, opts ...streamcancel.Option) *streamcancel.Registry {
	return e.registryOn(t, e.client(t), node, opts...)
}

func (e *env) registryOn(t *testing.T, rdb redis.UniversalClient, node string, opts ...streamcancel.Option) *streamcancel.Registry {
	base := []streamcancel.Option{streamcancel.WithNodeID(node), streamcancel.WithKeyPrefix(e.prefix)}
	r, err := streamcancel.NewRegistry(rdb, append(base, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// runKey is the key of a stream's active marker, as DESIGN.md documents it.
// It is valid for IDs without '%' or '}'.
func (e *env) runKey(streamID string) string {
	return e.prefix + ":{" + streamID + "}:run"
}

// keys returns the keys under e's prefix, except the records of cancel
// calls, and allKeys lists them too.
func (e *env) keys(t *testing.T, c *redis.Client) []string {
	return withoutCallRecords(e.allKeys(t, c))
}

// withoutCallRecords returns keys without the records of cancel calls.
// Those outlive the runs that the calls canceled by design, for the length
// of the call.
func withoutCallRecords(keys []string) []string {
	var left []string
	for _, key := range keys {
		if !strings.HasSuffix(key, ":calls") {
			left = append(left, key)
		}
	}
	return left
}

// allKeys returns every key under e's prefix.
func (e *env) allKeys(t *testing.T, c *redis.Client) []string {
	keys, err := c.Keys(context.Background(), e.prefix+":*").Result()
	require.NoError(t, err)
	return keys
}

// waitSubscribed waits until r's subscriber is confirmed, so that a test
// that checks the push path does not race the first SUBSCRIBE.
func waitSubscribed(t *testing.T, r *streamcancel.Registry) {
	t.Helper()
	require.Eventually(t, func() bool { return r.Stats().Subscribed }, 5*time.Second, 5*time.Millisecond, "subscriber never confirmed")
}

// waitDone waits for the run's context to end and returns how long that
// took; it fails the test after limit.
func waitDone(t *testing.T, chk *streamcancel.Checker, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-chk.Context().Done():
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("run of %q still active after %v", chk.StreamID(), limit)
		return 0
	}
}

// stayActive fails the test if the run ends within d.
func stayActive(t *testing.T, chk *streamcancel.Checker, d time.Duration) {
	t.Helper()
	select {
	case <-chk.Context().Done():
		t.Fatalf("run of %q ended, want active; cause: %v", chk.StreamID(), context.Cause(chk.Context()))
	case <-time.After(d):
	}
	require.False(t, chk.Cancelled(), "Cancelled() of %q", chk.StreamID())
}

// stream calls Cancelled every interval until it returns true or max
// chunks were sent, and returns the number of chunks sent.
func stream(chk *streamcancel.Checker, interval time.Duration, max int) int {
	sent := 0
	for sent < max {
		if chk.Cancelled() {
			return sent
		}
		sent++
		time.Sleep(interval)
	}
	return sent
}

// cancelWhileCutOff starts a run of id on a, cuts a off from Redis by
// refusing and cutting the connections of proxy, its proxy, and cancels
// the run from b. The cancel is found and recorded, but its push cannot
// reach a. It returns the run's Checker, closed when the test ends.
func cancelWhileCutOff(t *testing.T, proxy *faultproxy.Proxy, a, b *streamcancel.Registry, id string) *streamcancel.Checker {
	t.Helper()
	chk, err := a.Start(ctx, id)
	require.NoError(t, err)
	t.Cleanup(func() { _ = chk.Close() })

	proxy.Refuse(true)
	proxy.Cut()
	res, err := b.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, res.Found, "Cancel(%q).Found while its node is cut off", id)
	return chk
}

// watchSubscribers samples the number of subscribers of channel on c's
// server every 5ms until the returned function is called, which returns
// the largest number seen.
func watchSubscribers(c *redis.Client, channel string) (stop func() int64) {
	done := make(chan struct{})
	result := make(chan int64, 1)
	go func() {
		var maxSeen int64
		defer func() { result <- maxSeen }()
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if n, err := c.PubSubNumSub(ctx, channel).Result(); err == nil {
				maxSeen = max(maxSeen, n[channel])
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-result
	}
}

// downAddr returns a loopback address where nothing listens.
func downAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// commandCounter is a go-redis hook that counts commands, pipelines and
// the pipelines in flight at once.
type commandCounter struct {
	commands    atomic.Int64
	pipelines   atomic.Int64
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
}

func (h *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.commands.Add(1)
		return next(ctx, cmd)
	}
}

func (h *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		n := h.inFlight.Add(1)
		defer h.inFlight.Add(-1)
		for {
			m := h.maxInFlight.Load()
			if n <= m || h.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		return next(ctx, cmds)
	}
}

// logRecorder is a slog handler that keeps every record.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

// find returns the records whose message contains substr, with their
// attributes as strings.
func (l *logRecorder) find(substr string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.records {
		if !strings.Contains(r.Message, substr) {
			continue
		}
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, attrs)
	}
	return out
}
