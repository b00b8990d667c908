package streamcancel_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
	"github.com/streamcancel/streamcancel/internal/redistest"
)

// The tests in this file cover races between Start, Cancel and the two
// Close methods, Redis servers that do not reply, odd inputs and large
// numbers of runs.

// countKeys returns how many keys match the glob pattern, except the
// records of cancel calls.
func countKeys(t *testing.T, c *redis.Client, pattern string) int {
	t.Helper()
	keys, err := c.Keys(ctx, pattern).Result()
	require.NoError(t, err)
	return len(withoutCallRecords(keys))
}

// Checker.Close racing Registry.Close leaves no marker: either the
// Checker deletes its marker, or the registry finds the run and does.
func TestCheckerCloseRacingRegistryClose(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.client(t)
		const iterations, runsPerIteration = 60, 20

		leaked := 0
		for it := 0; it < iterations; it++ {
			rdb := e.client(t)
			r, err := streamcancel.NewRegistry(rdb, streamcancel.WithKeyPrefix(e.prefix), streamcancel.WithNodeID(fmt.Sprintf("node-%d", it)))
			require.NoError(t, err)

			checkers := make([]*streamcancel.Checker, runsPerIteration)
			for i := range checkers {
				checkers[i], err = r.Start(ctx, fmt.Sprintf("it%d-run%d", it, i))
				require.NoError(t, err)
			}

			var wg sync.WaitGroup
			for _, chk := range checkers {
				wg.Add(1)
				go func(chk *streamcancel.Checker) {
					defer wg.Done()
					_ = chk.Close()
				}(chk)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = r.Close()
			}()
			wg.Wait()

			leaked += countKeys(t, c, fmt.Sprintf("%s:{it%d-run*", e.prefix, it))
		}
		assert.Zero(t, leaked, "markers left after every Checker and the registry were closed, of %d runs", iterations*runsPerIteration)
	})
}

// Start racing Registry.Close leaves no marker: Close waits for the
// registrations in flight before it deletes the markers of its runs.
func TestStartRacingRegistryClose(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.client(t)
		const iterations, startsPerIteration = 30, 20

		leaked, returned := 0, 0
		for it := 0; it < iterations; it++ {
			rdb := e.client(t)
			r, err := streamcancel.NewRegistry(rdb, streamcancel.WithKeyPrefix(e.prefix), streamcancel.WithNodeID(fmt.Sprintf("node-%d", it)))
			require.NoError(t, err)

			var (
				wg  sync.WaitGroup
				mu  sync.Mutex
				got []*streamcancel.Checker
			)
			for i := 0; i < startsPerIteration; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					chk, err := r.Start(ctx, fmt.Sprintf("it%d-run%d", it, i))
					if err == nil {
						mu.Lock()
						got = append(got, chk)
						mu.Unlock()
					}
				}(i)
			}
			time.Sleep(time.Duration(it%5) * 100 * time.Microsecond)
			_ = r.Close()
			wg.Wait()
			for _, chk := range got {
				_ = chk.Close()
			}
			returned += len(got)

			leaked += countKeys(t, c, fmt.Sprintf("%s:{it%d-run*", e.prefix, it))
		}
		t.Logf("%d of %d Starts returned a Checker", returned, iterations*startsPerIteration)
		assert.Zero(t, leaked, "markers left after the registry and every returned Checker were closed")
	})
}

// Cancelled reports a parent context that has ended within CheckEvery
// calls, even before the flag that context.AfterFunc sets on its own
// goroutine is visible.
func TestCancelledSeesParentWithinCheckEvery(t *testing.T) {
	m := newMiniEnv(t)
	a := m.registry(t, "node-a")

	const runs, checkEvery = 200, 10
	for i := 0; i < runs; i++ {
		parent, cancel := context.WithCancel(ctx)
		chk, err := a.Start(parent, fmt.Sprintf("chat-%d", i))
		require.NoError(t, err)
		cancel()

		seen := false
		for call := 0; call < checkEvery && !seen; call++ {
			seen = chk.Cancelled()
		}
		require.True(t, seen, "run %d: Cancelled() within %d calls after the parent ended", i, checkEvery)
		require.NoError(t, chk.Close())
	}
}

// newMiniEnv returns an env on a miniredis of its own.
func newMiniEnv(t *testing.T) *env {
	m := miniredis.RunT(t)
	return &env{addr: m.Addr(), prefix: "sctest", mini: m}
}

// Errors for calls after Close name the call's stream ID.
func TestErrClosedNamesStreamID(t *testing.T) {
	e := newMiniEnv(t)
	a := e.registry(t, "node-a")
	require.NoError(t, a.Close())

	_, err := a.Start(ctx, "chat-1")
	require.ErrorIs(t, err, streamcancel.ErrClosed)
	assert.Contains(t, err.Error(), "chat-1", "Start error after Close")
	_, err = a.Cancel(ctx, "chat-1")
	require.ErrorIs(t, err, streamcancel.ErrClosed)
	assert.Contains(t, err.Error(), "chat-1", "Cancel error after Close")
}

// 10,000 runs on one registry: Start does not slow down as runs pile up,
// each poll is one pipeline, the registry keeps two goroutines, and
// closing every run leaves no key and no goroutine behind. The client is
// one the registry cannot probe through, so every PollInterval reads all
// runs, as on Redis Cluster.
func TestTenThousandRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 10,000 runs")
	}
	const runs = 10000
	c := redistest.Shared(t)
	prefix := redistest.UniquePrefix(t)
	hook := &commandCounter{}
	rdb := redis.NewClient(&redis.Options{Addr: c.Options().Addr})
	defer rdb.Close()
	rdb.AddHook(hook)
	baseline := runtime.NumGoroutine()

	a, err := streamcancel.NewRegistry(otherClient{rdb}, streamcancel.WithKeyPrefix(prefix), streamcancel.WithNodeID("node-a"), streamcancel.WithPollInterval(200*time.Millisecond))
	require.NoError(t, err)
	defer a.Close()
	waitSubscribed(t, a)

	checkers := make([]*streamcancel.Checker, runs)
	var firstK, lastK time.Duration
	for i := range checkers {
		begin := time.Now()
		checkers[i], err = a.Start(ctx, fmt.Sprintf("run-%d", i))
		require.NoError(t, err)
		switch {
		case i < 1000:
			firstK += time.Since(begin)
		case i >= runs-1000:
			lastK += time.Since(begin)
		}
	}
	t.Logf("Start: first 1000 runs %v, last 1000 runs %v", firstK, lastK)
	assert.Less(t, lastK, 3*firstK+100*time.Millisecond, "Start time of the last 1000 runs against the first 1000")

	pipelines := hook.pipelines.Load()
	time.Sleep(time.Second)
	polls := hook.pipelines.Load() - pipelines
	t.Logf("pipelines in 1s with %d runs and a 200ms poll interval: %d; goroutines: %d (baseline %d)", runs, polls, runtime.NumGoroutine(), baseline)
	assert.LessOrEqual(t, polls, int64(7), "pipelines in 1s")
	assert.Positive(t, polls, "pipelines in 1s")
	assert.Less(t, runtime.NumGoroutine(), baseline+20, "goroutines with %d runs", runs)

	begin := time.Now()
	stats := a.Stats()
	t.Logf("Stats with %d runs took %v", runs, time.Since(begin))
	assert.Equal(t, runs, stats.ActiveRuns)
	assert.Zero(t, stats.UnregisteredRuns)

	res, err := a.Cancel(ctx, "run-5000")
	require.NoError(t, err)
	assert.True(t, res.Found)
	assert.True(t, checkers[5000].Cancelled())

	begin = time.Now()
	for _, chk := range checkers {
		require.NoError(t, chk.Close())
	}
	t.Logf("closing %d runs took %v", runs, time.Since(begin))
	assert.Zero(t, countKeys(t, c, prefix+":*"), "keys after every run closed")
	assert.Zero(t, a.Stats().ActiveRuns)
}

// Start, Cancel, Checker.Close and Stats run concurrently on two nodes for
// 500ms. Every returned Checker is closed, so no key may be left: in
// particular, background passes leave a run alone until Start has its own
// registration's result.
func TestConcurrentStartCancelClose(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		regs := []*streamcancel.Registry{
			e.registry(t, "node-a", streamcancel.WithPollInterval(10*time.Millisecond), streamcancel.WithCheckEvery(1)),
			e.registry(t, "node-b", streamcancel.WithPollInterval(10*time.Millisecond), streamcancel.WithCheckEvery(1)),
		}
		const workers, ids = 8, 5
		deadline := time.Now().Add(500 * time.Millisecond)

		var (
			wg                        sync.WaitGroup
			mu                        sync.Mutex
			started, found, unexpects int
		)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; time.Now().Before(deadline); i++ {
					r := regs[(w+i)%2]
					id := fmt.Sprintf("chat-%d", (w*7+i)%ids)
					switch i % 3 {
					case 0:
						chk, err := r.Start(ctx, id)
						if err != nil {
							if !assert.ErrorIs(t, err, streamcancel.ErrAlreadyActive) {
								return
							}
							continue
						}
						mu.Lock()
						started++
						mu.Unlock()
						for j := 0; j < 5 && !chk.Cancelled(); j++ {
							time.Sleep(100 * time.Microsecond)
						}
						_ = r.Stats()
						assert.NoError(t, chk.Close())
					case 1:
						res, err := r.Cancel(ctx, id)
						if !assert.NoError(t, err) {
							return
						}
						if res.Found {
							mu.Lock()
							found++
							mu.Unlock()
						}
					case 2:
						stats := r.Stats()
						if stats.ActiveRuns > ids {
							mu.Lock()
							unexpects++
							mu.Unlock()
						}
					}
				}
			}(w)
		}
		wg.Wait()
		t.Logf("runs started %d, cancels found %d", started, found)
		assert.Positive(t, started)
		assert.Zero(t, unexpects, "Stats with more active runs than stream IDs")
		assert.Empty(t, e.keys(t, e.client(t)), "keys right after every run closed")
		time.Sleep(200 * time.Millisecond)
		assert.Empty(t, e.keys(t, e.client(t)), "keys 200ms after every run closed")
	})
}

// Redis turns into a blackhole for A: its current connections stop
// forwarding in both directions, and new ones are accepted but never
// answered. Every call on a caller's path keeps its bound, the loop is
// never canceled, and once the blackhole ends the registry works again.
func TestBlackholedRedisKeepsBounds(t *testing.T) {
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: 2 * time.Second})
	defer rdb.Close()
	a := e.registryOn(t, rdb, "node-a", streamcancel.WithPollInterval(50*time.Millisecond))
	b := e.registry(t, "node-b")
	waitSubscribed(t, a)

	running, err := a.Start(ctx, "running")
	require.NoError(t, err)
	defer running.Close()
	// Warm the pool, so that the calls below also meet stalled connections.
	var warm sync.WaitGroup
	for i := 0; i < 10; i++ {
		warm.Add(1)
		go func() {
			defer warm.Done()
			_ = rdb.Ping(ctx).Err()
		}()
	}
	warm.Wait()

	proxy.Blackhole(true)
	proxy.Stall()
	begin := time.Now()
	chk, err := a.Start(ctx, "blackholed")
	t.Logf("Start in the blackhole took %v", time.Since(begin))
	assert.Less(t, time.Since(begin), startBound, "Start in the blackhole")
	require.NoError(t, err)
	begin = time.Now()
	_ = chk.Close()
	t.Logf("Checker.Close in the blackhole took %v", time.Since(begin))
	assert.Less(t, time.Since(begin), startBound, "Checker.Close in the blackhole")

	assert.Equal(t, 200, stream(running, time.Millisecond, 200), "chunks in the blackhole; cause %v", context.Cause(running.Context()))

	// The stalled connections may deliver this Cancel's script to Redis
	// after it timed out. The run may then stop through a later poll, as
	// Cancel's documentation allows.
	cancelCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	begin = time.Now()
	res, err := a.Cancel(cancelCtx, "running")
	assert.Less(t, time.Since(begin), 400*time.Millisecond, "Cancel with a 300ms deadline in the blackhole")
	assert.Error(t, err)
	assert.False(t, res.Found)

	proxy.Blackhole(false)
	proxy.Thaw()
	_, err = b.Cancel(ctx, "running")
	require.NoError(t, err, "Cancel after the thaw")
	waitDone(t, running, 3*time.Second)
	assert.ErrorIs(t, context.Cause(running.Context()), streamcancel.ErrCanceled)
}

// The largest durations the options accept work: a lease of about 290
// years and a poll interval of the same length.
func TestHugeOptionValues(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		const huge = time.Duration(1<<63 - 1)
		a := e.registry(t, "node-a", streamcancel.WithTTL(huge), streamcancel.WithPollInterval(huge), streamcancel.WithCheckEvery(1<<62))
		b := e.registry(t, "node-b")
		c := e.client(t)
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()
		assert.Equal(t, 0, a.Stats().UnregisteredRuns)
		pttl, err := c.PTTL(ctx, e.runKey("chat-1")).Result()
		require.NoError(t, err)
		assert.Greater(t, pttl, 100*365*24*time.Hour, "PTTL of the marker")

		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		require.True(t, res.Found)
		waitDone(t, chk, time.Second)
	})
}

// A second Close that runs while the first one is still removing markers
// waits for the first.
func TestConcurrentRegistryCloseWaits(t *testing.T) {
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a")
	c := e.client(t)
	for i := 0; i < 10; i++ {
		_, err := a.Start(ctx, fmt.Sprintf("chat-%d", i))
		require.NoError(t, err)
	}
	proxy.SetDelay(200 * time.Millisecond)

	first := make(chan error, 1)
	go func() {
		first <- a.Close()
	}()
	time.Sleep(10 * time.Millisecond)
	second := a.Close()

	// Both calls wake when the first Close finishes, so the first one's
	// goroutine may need a moment to deliver its result. A first Close
	// still running 100ms later means the second did not wait for it.
	select {
	case err := <-first:
		// With a 200ms delay per reply the first Close may report its
		// deadline; the second must report the same result.
		assert.Equal(t, err, second, "result of the second Close")
	case <-time.After(100 * time.Millisecond):
		t.Errorf("second Close returned while the first was still running; keys under the prefix: %d", len(e.keys(t, c)))
		<-first
	}
	proxy.SetDelay(0)
}

// A poll pass in flight when Registry.Close runs finishes before Close
// deletes the markers, so it cannot write one back.
func TestRegistryCloseRacingPoll(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.client(t)
		const iterations = 100

		leaked := 0
		for it := 0; it < iterations; it++ {
			rdb := e.client(t)
			r, err := streamcancel.NewRegistry(rdb, streamcancel.WithKeyPrefix(e.prefix), streamcancel.WithNodeID("node-a"), streamcancel.WithPollInterval(10*time.Millisecond))
			require.NoError(t, err)
			for i := 0; i < 20; i++ {
				_, err := r.Start(ctx, fmt.Sprintf("it%d-run%d", it, i))
				require.NoError(t, err)
			}
			time.Sleep(time.Duration(it%10) * time.Millisecond)
			_ = r.Close()
			leaked += countKeys(t, c, fmt.Sprintf("%s:{it%d-run*", e.prefix, it))
		}
		assert.Zero(t, leaked, "markers left after Registry.Close, of %d runs", iterations*20)
	})
}

// When Start fails open because Redis did not reply within its 500ms
// bound, the logged error states the bound and that the run stays
// unregistered.
func TestStartTimeoutLogNamesCause(t *testing.T) {
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	logs := &logRecorder{}
	a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithLogger(slog.New(logs)))
	waitSubscribed(t, a)

	proxy.SetDelay(700 * time.Millisecond)
	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err, "Start fails open")
	defer chk.Close()

	records := logs.find("start failed to register")
	require.Len(t, records, 1)
	t.Logf("logged error: %q", records[0]["error"])
	assert.Contains(t, records[0]["error"], "500ms", "logged error of a Start that timed out")
	proxy.SetDelay(0)
}
