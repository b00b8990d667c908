package streamcancel_test

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// downClient returns a client of a loopback address where nothing
// listens. It does not retry, so every call fails at once.
func downClient(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: downAddr(t), MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sync.lua creates a missing marker only in register mode, with the lease
// as its TTL. In read and extend mode it reports the marker as missing and
// writes nothing.
func TestSyncScriptCreatesOnRegisterOnly(t *testing.T) {
	push, err := os.ReadFile("push.lua")
	require.NoError(t, err)
	source, err := os.ReadFile("sync.lua")
	require.NoError(t, err)
	script := redis.NewScript(string(push) + string(source))
	const token = "0123456789abcdef0123456789abcdef"
	const ttl = 5 * time.Second

	eachBackend(t, func(t *testing.T, e *env) {
		c := e.client(t)
		key := e.runKey("chat-1")
		keys := []string{key, e.prefix + ":{chat-1}:pending", e.prefix + ":{chat-1}:over"}

		for _, mode := range []string{"read", "extend"} {
			reply, err := script.Run(ctx, c, keys, token, "node-a", ttl.Milliseconds(), mode, e.prefix+":node:").Slice()
			require.NoError(t, err, "mode %s", mode)
			assert.Equal(t, []interface{}{int64(0), int64(0), "", ""}, reply, "reply in mode %s", mode)
			assert.Empty(t, e.keys(t, c), "keys after mode %s", mode)
		}

		reply, err := script.Run(ctx, c, keys, token, "node-a", ttl.Milliseconds(), "register", e.prefix+":node:").Slice()
		require.NoError(t, err)
		assert.Equal(t, []interface{}{int64(2), int64(0), "node-a", ""}, reply, "reply in mode register")
		pttl, err := c.PTTL(ctx, key).Result()
		require.NoError(t, err)
		assert.Greater(t, pttl, time.Duration(0), "marker PTTL")
		assert.LessOrEqual(t, pttl, ttl, "marker PTTL")
	})
}

// A subscriber on a client with a 100ms ReadTimeout stays idle for 3s,
// thirty read timeouts, with the default PollInterval. It keeps its one
// subscription, and the next cancel arrives through it within 200ms.
func TestIdleSubscriberKeepsSubscription(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		t.Parallel() // the two backends idle at the same time
		rdb := redis.NewClient(&redis.Options{Addr: e.addr, ReadTimeout: 100 * time.Millisecond})
		defer rdb.Close()
		a := e.registryOn(t, rdb, "node-a")
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)
		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		time.Sleep(3 * time.Second)
		stats := a.Stats()
		assert.True(t, stats.Subscribed)
		assert.Equal(t, uint64(1), stats.Subscriptions)
		assert.Zero(t, stats.SubscribeErrors)

		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		require.True(t, res.Found)
		assert.True(t, res.Pushed)
		waited := waitDone(t, chk, time.Second)
		t.Logf("cancel arrived %v after Cancel returned, after 3s idle", waited)
		assert.Less(t, waited, 200*time.Millisecond, "cancel after 3s idle")
		assert.Equal(t, uint64(1), a.Stats().PushesReceived)
	})
}

// A cancel whose push was lost while the subscriber was disconnected stops
// the run as soon as the subscriber is back, because every re-subscribe is
// followed by a poll. The periodic poll is an hour away.
func TestResubscribeFindsLostCancel(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		proxy := newProxy(t, e.addr)
		a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithPollInterval(time.Hour))
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)

		chk := cancelWhileCutOff(t, proxy, a, b, "chat-1")
		time.Sleep(100 * time.Millisecond)
		require.NoError(t, chk.Err(), "run while its subscriber is disconnected")

		proxy.Refuse(false)
		waitDone(t, chk, 3*time.Second)
		assert.ErrorIs(t, chk.Err(), streamcancel.ErrCanceled)
		assert.Zero(t, a.Stats().PushesReceived)
	})
}

// A run whose marker vanished, as after a Redis restart without
// persistence, is registered again by the first poll that finds it
// missing, not by a later one.
func TestMissingMarkerRegisteredAtFirstPoll(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		proxy := newProxy(t, e.addr)
		a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithPollInterval(time.Hour))
		c := e.client(t)
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()
		require.NoError(t, c.Del(ctx, e.runKey("chat-1")).Err())

		// The cut makes the subscriber re-subscribe. The poll that follows
		// is the only one within the next hour, and the first lease
		// refresh is 10s away.
		proxy.Cut()
		require.Eventually(t, func() bool {
			n, err := c.Exists(ctx, e.runKey("chat-1")).Result()
			return err == nil && n == 1
		}, 3*time.Second, 10*time.Millisecond, "marker registered again")
	})
}

// Cancelled does not allocate on any call. Each measured run makes 100
// calls, so it includes the CheckEvery-th calls that request a poll.
func TestCancelledNeverAllocates(t *testing.T) {
	measure := func(t *testing.T, chk *streamcancel.Checker) {
		allocs := testing.AllocsPerRun(100, func() {
			for i := 0; i < 100; i++ {
				if chk.Cancelled() {
					t.Fatal("Cancelled() of an active run")
				}
				// AllocsPerRun sets GOMAXPROCS to 1. Yielding lets the
				// background loop take each queued poll request, so that
				// the next request is queued again and measured too.
				runtime.Gosched()
			}
		})
		assert.Zero(t, allocs, "allocations per 100 calls")
	}

	t.Run("push up", func(t *testing.T) {
		eachBackend(t, func(t *testing.T, e *env) {
			a := e.registry(t, "node-a", streamcancel.WithPollInterval(time.Hour))
			waitSubscribed(t, a)
			chk, err := a.Start(ctx, "chat-1")
			require.NoError(t, err)
			defer chk.Close()
			measure(t, chk)
		})
	})
	t.Run("push down", func(t *testing.T) {
		a, err := streamcancel.NewRegistry(downClient(t), streamcancel.WithPollInterval(time.Hour))
		require.NoError(t, err)
		defer a.Close()
		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		// The first requested poll is due at once. Letting it fail before
		// measuring keeps its allocations out of the count. The next one
		// is PollInterval/4 away.
		for i := 0; i < 10; i++ {
			require.False(t, chk.Cancelled())
		}
		time.Sleep(200 * time.Millisecond)
		measure(t, chk)
	})
}

// NewRegistry rejects a key prefix that contains either brace, because
// the library places its own hash tag after the prefix.
func TestKeyPrefixRejectsEitherBrace(t *testing.T) {
	for _, prefix := range []string{"app{1", "app}1"} {
		r, err := streamcancel.NewRegistry(downClient(t), streamcancel.WithKeyPrefix(prefix))
		assert.ErrorIs(t, err, streamcancel.ErrInvalidOption, "prefix %q", prefix)
		if r != nil {
			_ = r.Close()
		}
	}
}

// While Redis is down, Start still rejects a second run of a stream on the
// same node: the local check does not depend on Redis.
func TestLocalDuplicateRejectedRedisDown(t *testing.T) {
	a, err := streamcancel.NewRegistry(downClient(t), streamcancel.WithNodeID("node-a"))
	require.NoError(t, err)
	defer a.Close()

	first, err := a.Start(ctx, "chat-1")
	require.NoError(t, err, "Start fails open")
	defer first.Close()

	second, err := a.Start(ctx, "chat-1")
	assert.ErrorIs(t, err, streamcancel.ErrAlreadyActive)
	if second != nil {
		_ = second.Close()
	}
	assert.False(t, first.Cancelled())
}

// A run whose marker now holds another run's token keeps going, and its
// registry logs one conflict record with the stream ID and the other node,
// and counts the conflict.
func TestTakenOverRunReportsConflict(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		logs := &logRecorder{}
		a := e.readingRegistry(t, "node-a", streamcancel.WithPollInterval(20*time.Millisecond), streamcancel.WithLogger(slog.New(logs)))
		c := e.client(t)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		// One HSET replaces the token, so no poll finds the marker missing.
		require.NoError(t, c.HSet(ctx, e.runKey("chat-1"), "token", "0123456789abcdef0123456789abcdef", "node", "node-b").Err())

		require.Eventually(t, func() bool { return a.Stats().Conflicts > 0 }, time.Second, 5*time.Millisecond, "conflicts counted")
		assert.Equal(t, 1, a.Stats().UnregisteredRuns)
		records := logs.find("lost its marker")
		require.Len(t, records, 1, "conflict log records")
		assert.Equal(t, "chat-1", records[0]["stream_id"])
		assert.Contains(t, records[0]["error"], `"node-b"`)
		stayActive(t, chk, 100*time.Millisecond)
	})
}

// While the push path is down, the polls that Cancelled requests for one
// run go out at most once per PollInterval/4, however often it is called.
func TestRequestedPollsAreRateLimited(t *testing.T) {
	rdb := downClient(t)
	hook := &commandCounter{}
	rdb.AddHook(hook)
	a, err := streamcancel.NewRegistry(rdb, streamcancel.WithPollInterval(time.Hour), streamcancel.WithCheckEvery(1))
	require.NoError(t, err)
	defer a.Close()

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer chk.Close()

	before := hook.pipelines.Load()
	require.Equal(t, 200, stream(chk, time.Millisecond, 200))
	assert.LessOrEqual(t, hook.pipelines.Load()-before, int64(1), "poll pipelines for 200 calls")
}

// While Redis is down, the subscriber doubles its wait after each failed
// attempt, from 10ms up to 1s, instead of retrying every 10ms.
func TestSubscriberBacksOffWhileRedisDown(t *testing.T) {
	a, err := streamcancel.NewRegistry(downClient(t))
	require.NoError(t, err)
	defer a.Close()

	// Attempts start at 0, 10, 30, 70, 150, 310 and 630ms: 7 in one
	// second, where a fixed 10ms wait would make about 100.
	time.Sleep(time.Second)
	failures := a.Stats().SubscribeErrors
	assert.Positive(t, failures)
	assert.LessOrEqual(t, failures, uint64(12), "subscribe attempts in 1s")
}

// Stats().Subscribed turns false once the subscriber's connection is
// lost, and true again after it re-subscribes.
func TestSubscribedFollowsConnection(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		proxy := newProxy(t, e.addr)
		a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a")
		waitSubscribed(t, a)

		proxy.Refuse(true)
		proxy.Cut()
		require.Eventually(t, func() bool { return !a.Stats().Subscribed }, time.Second, 5*time.Millisecond, "Subscribed after the connection was cut")

		proxy.Refuse(false)
		waitSubscribed(t, a)
	})
}

// Checker.Close returns an error, and the same one on later calls, when
// the marker could not be removed, and counts it. The marker is left to
// expire.
func TestCheckerCloseReportsReleaseFailure(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		proxy := newProxy(t, e.addr)
		a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a")

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		proxy.Refuse(true)
		proxy.Cut()

		err = chk.Close()
		require.Error(t, err)
		assert.ErrorContains(t, err, "expires after the TTL")
		assert.Equal(t, err, chk.Close(), "second Close")
		assert.Equal(t, uint64(1), a.Stats().ReleaseErrors)
		assert.Len(t, e.keys(t, e.client(t)), 1, "markers after the failed Close")
	})
}

// Cancel with a context that has no deadline gives up after 5s while Redis
// does not reply.
func TestCancelGivesUpAfterFiveSeconds(t *testing.T) {
	m := miniredis.RunT(t)
	proxy := newProxy(t, m.Addr())
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: 20 * time.Second})
	defer rdb.Close()
	b, err := streamcancel.NewRegistry(rdb, streamcancel.WithNodeID("node-b"))
	require.NoError(t, err)
	defer b.Close()

	// The first Cancel leaves a pooled connection, which Freeze then stops.
	_, err = b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	proxy.Freeze()

	start := time.Now()
	_, err = b.Cancel(context.Background(), "chat-1")
	elapsed := time.Since(start)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, elapsed, 5*time.Second, "Cancel duration")
	assert.Less(t, elapsed, 6*time.Second, "Cancel duration")
}

// A run whose stream another run took over is registered again once that
// other run's marker is gone, so it can be canceled again.
func TestTakenOverRunRegisteredAgain(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.readingRegistry(t, "node-a", streamcancel.WithPollInterval(20*time.Millisecond))
		b := e.registry(t, "node-b")
		c := e.client(t)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()
		require.NoError(t, c.HSet(ctx, e.runKey("chat-1"), "token", "0123456789abcdef0123456789abcdef", "node", "node-b").Err())
		require.Eventually(t, func() bool { return a.Stats().Conflicts > 0 }, time.Second, 5*time.Millisecond, "conflicts counted")

		require.NoError(t, c.Del(ctx, e.runKey("chat-1")).Err())
		require.Eventually(t, func() bool { return a.Stats().UnregisteredRuns == 0 }, time.Second, 5*time.Millisecond, "run registered again")
		node, err := c.HGet(ctx, e.runKey("chat-1"), "node").Result()
		require.NoError(t, err)
		assert.Equal(t, "node-a", node)

		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		require.True(t, res.Found)
		waitDone(t, chk, time.Second)
	})
}

// After SCRIPT FLUSH, as after a failover to a server that never loaded
// the scripts, the background passes and Registry.Close still run them: a
// lost marker is registered again, and Close deletes every marker.
func TestScriptCacheFlushed(t *testing.T) {
	e := ownServer(t)
	c := e.client(t)
	a := e.readingRegistry(t, "node-a", streamcancel.WithPollInterval(20*time.Millisecond))

	for _, id := range []string{"chat-1", "chat-2"} {
		chk, err := a.Start(ctx, id)
		require.NoError(t, err)
		defer chk.Close()
	}

	require.NoError(t, c.ScriptFlush(ctx).Err())
	require.NoError(t, c.Del(ctx, e.runKey("chat-1")).Err())
	require.Eventually(t, func() bool {
		n, err := c.Exists(ctx, e.runKey("chat-1")).Result()
		return err == nil && n == 1
	}, 2*time.Second, 5*time.Millisecond, "marker of chat-1 registered again")

	require.NoError(t, c.ScriptFlush(ctx).Err())
	require.NoError(t, a.Close())
	assert.Empty(t, e.keys(t, c), "keys after Close")
}

// Cancel, CancelAndWait and CancelGroup with a context that has already
// ended send nothing: each returns the context's error, the run goes on,
// and no error is counted.
func TestCancelWithEndedContextSendsNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b", streamcancel.WithPendingCancel(time.Second))

		chk, err := a.Start(ctx, "chat-1", streamcancel.WithGroup("conv-1"))
		require.NoError(t, err)
		defer chk.Close()
		ended, cancel := context.WithCancel(ctx)
		cancel()

		_, err = b.Cancel(ended, "chat-1")
		require.ErrorIs(t, err, context.Canceled, "Cancel")
		assert.Contains(t, err.Error(), "nothing was sent")
		_, err = b.Cancel(ended, "chat-2")
		require.ErrorIs(t, err, context.Canceled, "Cancel of a stream with no run")
		_, err = b.CancelAndWait(ended, "chat-1")
		require.ErrorIs(t, err, context.Canceled, "CancelAndWait")
		n, err := b.CancelGroup(ended, "conv-1")
		require.ErrorIs(t, err, context.Canceled, "CancelGroup")
		assert.Zero(t, n, "runs CancelGroup counted")

		time.Sleep(50 * time.Millisecond)
		assert.NoError(t, chk.Err(), "run after the calls")
		assert.Equal(t, []string{e.runKey("chat-1")}, filterKeys(e.keys(t, e.client(t)), ":run"), "run keys; no pending cancel for chat-2")
		assert.Empty(t, filterKeys(e.keys(t, e.client(t)), ":pending"), "pending keys")
		assert.Zero(t, b.Stats().CancelErrors, "cancel errors counted")
	})
}

// filterKeys returns the keys that end with suffix.
func filterKeys(keys []string, suffix string) []string {
	var out []string
	for _, k := range keys {
		if strings.HasSuffix(k, suffix) {
			out = append(out, k)
		}
	}
	return out
}
