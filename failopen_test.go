package streamcancel_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// startBound is how long Start may take while Redis is down or slow: its
// 500ms bound on the Redis call plus scheduling slack.
const startBound = 700 * time.Millisecond

// streamer runs loops on Checkers until stopped and records whether
// any loop saw a cancel.
type streamer struct {
	wg       sync.WaitGroup
	stop     atomic.Bool
	chunks   atomic.Int64
	canceled atomic.Int64
}

func (s *streamer) run(chk *streamcancel.Checker) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for !s.stop.Load() {
			if chk.Cancelled() {
				s.canceled.Add(1)
				return
			}
			s.chunks.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
}

func (s *streamer) finish() {
	s.stop.Store(true)
	s.wg.Wait()
}

// With 50 runs streaming, Redis goes down for 3s. The runs keep
// going, Start returns a working Checker within its bound, Cancel returns
// an error and never Found, errors are logged once per kind and counted,
// and after recovery the runs are registered again and cancels work.
func TestRedisDownFailsOpen(t *testing.T) {
	const outage = 3 * time.Second
	e := ownServer(t)
	logs := &logRecorder{}
	a := e.registry(t, "node-a",
		streamcancel.WithPollInterval(50*time.Millisecond),
		streamcancel.WithTTL(time.Second),
		streamcancel.WithLogger(slog.New(logs)),
	)
	b := e.registry(t, "node-b")

	s := &streamer{}
	defer s.finish()
	for i := 0; i < 50; i++ {
		chk, err := a.Start(ctx, "chat-"+itoa(i))
		require.NoError(t, err)
		defer chk.Close()
		s.run(chk)
	}

	e.server.Stop()
	downSince := time.Now()

	start := time.Now()
	late, err := a.Start(ctx, "late")
	require.NoError(t, err, "Start while Redis is down")
	defer late.Close()
	assert.Less(t, time.Since(start), startBound, "Start while Redis is down")
	assert.False(t, late.Cancelled())

	res, err := b.Cancel(ctx, "chat-0")
	require.Error(t, err, "Cancel while Redis is down")
	assert.False(t, res.Found)

	chunksBefore := s.chunks.Load()
	time.Sleep(outage - time.Since(downSince))
	assert.Zero(t, s.canceled.Load(), "runs stopped during the outage")
	assert.Greater(t, s.chunks.Load()-chunksBefore, int64(50*100), "chunks sent during the outage")

	stats := a.Stats()
	assert.Greater(t, stats.SyncErrors, uint64(10))
	records := logs.find("sync failed")
	require.Len(t, records, 1, "sync error log records in %v", outage)
	assert.NotEmpty(t, records[0]["stream_id"])
	assert.NotEmpty(t, records[0]["error"])
	assert.Equal(t, "node-a", records[0]["node_id"])

	e.server.Restart()
	c := e.client(t)
	require.Eventually(t, func() bool {
		n, err := c.Exists(ctx, e.runKey("chat-0"), e.runKey("chat-49"), e.runKey("late")).Result()
		return err == nil && n == 3
	}, 3*time.Second, 10*time.Millisecond, "markers registered again after recovery")
	require.Eventually(t, func() bool { return a.Stats().UnregisteredRuns == 0 }, time.Second, 5*time.Millisecond, "unregistered runs after recovery")

	require.Eventually(t, func() bool {
		res, err := b.Cancel(ctx, "chat-7")
		return err == nil && res.Found
	}, 3*time.Second, 50*time.Millisecond, "cancel after recovery")
	require.Eventually(t, func() bool { return s.canceled.Load() == 1 }, time.Second, 5*time.Millisecond)
	res, err = b.Cancel(ctx, "late")
	require.NoError(t, err)
	assert.True(t, res.Found, "cancel of the run started during the outage")
	waitDone(t, late, time.Second)
}

// Redis restarts empty while A streams. The stream never
// stops; A's run is registered again, so B's cancel finds it and stops it
// within PollInterval + 200ms.
func TestRedisRestartRegistersAgain(t *testing.T) {
	const poll = 100 * time.Millisecond
	const ttl = 3 * time.Second // refresh every second
	e := ownServer(t)
	a := e.registry(t, "node-a", streamcancel.WithPollInterval(poll), streamcancel.WithTTL(ttl))
	b := e.registry(t, "node-b")

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer chk.Close()
	s := &streamer{}
	s.run(chk)
	defer s.finish()

	e.server.Stop()
	time.Sleep(2 * time.Second)
	e.server.Restart()
	returned := time.Now()

	c := e.client(t)
	require.Eventually(t, func() bool {
		n, err := c.Exists(ctx, e.runKey("chat-1")).Result()
		return err == nil && n == 1
	}, ttl/3+time.Second, 10*time.Millisecond, "marker registered again")
	t.Logf("registered again %v after Redis returned", time.Since(returned))
	assert.Zero(t, s.canceled.Load(), "stream stopped during the outage")

	res, err := b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	require.True(t, res.Found)
	waitDone(t, chk, poll+200*time.Millisecond)
}

// While A streams, the server kills A's Pub/Sub connection. A cancel sent
// 500ms later stops A within PollInterval + 200ms, and afterwards exactly
// one subscriber of A's channel is alive.
func TestSubscriberKilled(t *testing.T) {
	const poll = 300 * time.Millisecond
	e := ownServer(t)
	a := e.registry(t, "node-a", streamcancel.WithPollInterval(poll))
	b := e.registry(t, "node-b")
	c := e.client(t)
	waitSubscribed(t, a)

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer chk.Close()

	killed, err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Int()
	require.NoError(t, err)
	require.Equal(t, 2, killed, "subscribers killed, one per registry")
	time.Sleep(500 * time.Millisecond)

	res, err := b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	require.True(t, res.Found)
	waitDone(t, chk, poll+200*time.Millisecond)

	channel := e.prefix + ":node:node-a"
	require.Eventually(t, func() bool {
		n, err := c.PubSubNumSub(ctx, channel).Result()
		return err == nil && n[channel] == 1
	}, 2*time.Second, 10*time.Millisecond, "subscribers of %s", channel)
	time.Sleep(3 * poll)
	n, err := c.PubSubNumSub(ctx, channel).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n[channel], "subscribers of %s", channel)
	assert.GreaterOrEqual(t, a.Stats().Subscriptions, uint64(2))
}

// Only A's subscriber connection goes half-open: the proxy still takes
// what A sends on it but delivers nothing back, while A's other
// connections stay healthy. A cancel sent right then stops the run within
// PollInterval + 200ms through the poll. The subscriber's own PING finds
// the dead connection and replaces it, after which pushes arrive again,
// and at no sample are two subscribers of A's channel alive on the server.
func TestHalfOpenSubscriberReplaced(t *testing.T) {
	const poll = time.Second
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithPollInterval(poll))
	b := e.registry(t, "node-b")
	c := e.client(t)
	waitSubscribed(t, a)

	channel := e.prefix + ":node:node-a"
	maxSubscribers := watchSubscribers(c, channel)

	first, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer first.Close()
	second, err := a.Start(ctx, "chat-2")
	require.NoError(t, err)
	defer second.Close()

	require.Equal(t, 1, proxy.FreezeSubscribers(), "connections frozen")
	frozenAt := time.Now()
	res, err := b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	require.True(t, res.Found)
	stopped := waitDone(t, first, poll+200*time.Millisecond)
	t.Logf("cancel sent to the half-open subscriber stopped the run %v after Cancel returned; pushed: %v", stopped, res.Pushed)

	require.Eventually(t, func() bool { return a.Stats().Subscriptions >= 2 && a.Stats().Subscribed }, 4*poll, 5*time.Millisecond, "subscriber replaced")
	t.Logf("half-open subscriber replaced %v after the freeze, with a PING interval of %v", time.Since(frozenAt), poll)

	res, err = b.Cancel(ctx, "chat-2")
	require.NoError(t, err)
	require.True(t, res.Found)
	assert.True(t, res.Pushed)
	pushed := waitDone(t, second, poll)
	t.Logf("cancel through the new subscriber stopped the run %v after Cancel returned", pushed)
	assert.Less(t, pushed, 200*time.Millisecond, "cancel through the new subscriber")
	assert.Equal(t, uint64(1), a.Stats().PushesReceived, "pushes received")

	assert.Equal(t, int64(1), maxSubscribers(), "most subscribers of %s alive at once", channel)
}

// When the caller's context ends while Start waits on a slow Redis, Start
// returns the context's error and counts no Redis error. The marker that
// lands late is deleted once Start's call returns, also when the client
// drops the reply because ContextTimeoutEnabled aborts the read although
// the script ran on Redis.
func TestStartContextEndsWhileRedisSlow(t *testing.T) {
	for _, contextTimeout := range []bool{false, true} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", contextTimeout), func(t *testing.T) {
			e := ownServer(t)
			proxy := newProxy(t, e.addr)
			rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ContextTimeoutEnabled: contextTimeout})
			defer rdb.Close()
			a := e.registryOn(t, rdb, "node-a", streamcancel.WithPollInterval(20*time.Millisecond))
			b := e.registry(t, "node-b")
			waitSubscribed(t, a)
			c := e.client(t)

			proxy.SetDelay(300 * time.Millisecond)
			startCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			chk, err := a.Start(startCtx, "chat-1")
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Nil(t, chk)

			time.Sleep(time.Second)
			proxy.SetDelay(0)
			assert.Empty(t, e.keys(t, c), "keys after the late registration")
			assert.Zero(t, a.Stats().StartErrors)
			assert.Zero(t, a.Stats().ActiveRuns)

			other, err := b.Start(ctx, "chat-1")
			require.NoError(t, err, "Start of the same ID on another node")
			require.NoError(t, other.Close())
			chk, err = a.Start(ctx, "chat-1")
			require.NoError(t, err, "Start of the same ID on the same node")
			require.NoError(t, chk.Close())
		})
	}
}

// A cancel recorded while the run's node cannot reach Redis is lost when
// the outage outlasts the marker's TTL: the record expires with the
// marker, and once the node reaches Redis again it registers the run anew
// without it. README.md states this limit.
func TestCancelLostWhenOutageOutlastsTTL(t *testing.T) {
	const ttl = 500 * time.Millisecond
	e := sharedEnv(t)
	proxy := newProxy(t, e.addr)
	a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithTTL(ttl), streamcancel.WithPollInterval(50*time.Millisecond))
	b := e.registry(t, "node-b", streamcancel.WithTTL(ttl))
	c := e.client(t)

	chk := cancelWhileCutOff(t, proxy, a, b, "chat-1")
	require.Eventually(t, func() bool {
		n, err := c.Exists(ctx, e.runKey("chat-1")).Result()
		return err == nil && n == 0
	}, ttl+time.Second, 10*time.Millisecond, "marker expired during A's outage")

	proxy.Refuse(false)
	require.Eventually(t, func() bool {
		n, err := c.Exists(ctx, e.runKey("chat-1")).Result()
		return err == nil && n == 1
	}, 3*time.Second, 10*time.Millisecond, "marker registered again")
	stayActive(t, chk, 300*time.Millisecond)
}
