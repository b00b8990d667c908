package streamcancel_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// probeTicks is how many PollIntervals the probe tests watch a registry.
const probeTicks = 20

// readPipelines counts the pipelines a registry with one active run sends
// during probeTicks PollIntervals of 20ms, after its first read. With a
// lease of 30 s no refresh falls in that time, so every pipeline is a read
// of the run's record.
func readPipelines(t *testing.T, e *env, wrap func(*redis.Client) redis.UniversalClient) (reads int64, probes uint64) {
	const poll = 20 * time.Millisecond
	counter := &commandCounter{}
	rdb := e.client(t)
	rdb.AddHook(counter)
	a := e.registryOn(t, wrap(rdb), "node-a", streamcancel.WithPollInterval(poll))
	waitSubscribed(t, a)

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer chk.Close()
	time.Sleep(3 * poll)

	before, probesBefore := counter.pipelines.Load(), a.Stats().Probes
	time.Sleep(probeTicks * poll)
	reads, probes = counter.pipelines.Load()-before, a.Stats().Probes-probesBefore
	t.Logf("%d pipelines and %d probes in %d PollIntervals", reads, probes, probeTicks)

	assert.False(t, chk.Cancelled(), "run canceled without a cancel")
	return reads, probes
}

// otherClient is a client that the registry cannot identify as one
// *redis.Client, as a wrapper of the application's would be.
type otherClient struct {
	*redis.Client
}

// readingRegistry returns a registry on a client that it cannot probe
// through, so that every PollInterval reads each run's record, as on Redis
// Cluster. Tests of what a read finds use it: they change
// records behind the registry's back, which no probe can notice because
// no push was lost.
func (e *env) readingRegistry(t *testing.T, node string, opts ...streamcancel.Option) *streamcancel.Registry {
	return e.registryOn(t, otherClient{e.client(t)}, node, opts...)
}

// On a *redis.Client a probe message that comes back proves that every
// earlier push arrived, so a registry whose push path is healthy reads no
// record at its PollIntervals. On a client that it cannot prove this for,
// it reads every PollInterval.
func TestPollProbesInsteadOfReading(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		t.Run("redis.Client", func(t *testing.T) {
			reads, probes := readPipelines(t, e, func(c *redis.Client) redis.UniversalClient { return c })
			assert.Less(t, reads, int64(probeTicks/2), "reads while every probe is answered")
			assert.GreaterOrEqual(t, probes, uint64(probeTicks/2), "Stats.Probes")
		})
		t.Run("other client", func(t *testing.T) {
			reads, probes := readPipelines(t, e, func(c *redis.Client) redis.UniversalClient { return otherClient{c} })
			assert.GreaterOrEqual(t, reads, int64(probeTicks/2), "reads when probes prove nothing")
			assert.Zero(t, probes, "Stats.Probes")
		})
	})
}

// A registry that probes instead of reading still finds a cancel whose
// push never arrived: the subscriber's connection goes half-open after a
// probe came back, and the next probe, which does not, makes that
// PollInterval a full read. The run stops within PollInterval, plus the
// probe's wait of PollInterval/50, plus a round trip.
func TestProbeLostMakesFullRead(t *testing.T) {
	const poll = 500 * time.Millisecond
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithPollInterval(poll))
	b := e.registry(t, "node-b")
	waitSubscribed(t, a)

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer chk.Close()

	// Two PollIntervals: the first may still read, the second probes.
	time.Sleep(2*poll + poll/10)

	require.Equal(t, 1, proxy.FreezeSubscribers(), "connections frozen")
	res, err := b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	require.True(t, res.Found)
	stopped := waitDone(t, chk, poll+poll/50+100*time.Millisecond)
	t.Logf("run stopped %v after Cancel returned", stopped)

	assert.Equal(t, uint64(0), a.Stats().PushesReceived, "pushes received through the frozen connection")
}

// A run whose Start is still waiting for Redis when the subscription is
// replaced misses the full read that follows the new subscription, since
// background passes skip runs in Start. A cancel recorded between its
// registration and the new subscription reached no subscriber, so the run
// must still be read at a later PollInterval, and a probe proves nothing
// for it. Here Start's reply is held while A's subscriber is killed and
// kept away, the cancel is recorded, and A subscribes again. The run must
// stop within PollInterval, plus the probe's wait of PollInterval/50, plus
// a round trip, after Start returns. Start begins either before the
// subscriber is killed or after.
func TestProbeReadsRunStartedDuringResubscribe(t *testing.T) {
	for _, subscribedAtStart := range []bool{true, false} {
		t.Run(fmt.Sprintf("subscribed at Start %v", subscribedAtStart), func(t *testing.T) {
			startDuringResubscribe(t, subscribedAtStart)
		})
	}
}

func startDuringResubscribe(t *testing.T, subscribedAtStart bool) {
	const poll = 100 * time.Millisecond
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	rdbA := clientAt(t, proxy.Addr())
	a := e.registryOn(t, rdbA, "node-a", streamcancel.WithPollInterval(poll))
	b := e.registry(t, "node-b")
	admin := e.client(t)
	waitSubscribed(t, a)
	subscriptions := a.Stats().Subscriptions

	// Start needs an idle connection in A's pool once the proxy refuses
	// new ones.
	require.NoError(t, rdbA.Ping(ctx).Err())

	// A's subscriber cannot come back while the proxy refuses.
	proxy.Refuse(true)
	killSubscriber := func() {
		require.NoError(t, admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
		require.Eventually(t, func() bool { return !a.Stats().Subscribed }, time.Second, time.Millisecond, "A still subscribed")
	}
	if !subscribedAtStart {
		killSubscriber()
	}

	// Start's registration reaches Redis on A's idle pool connection,
	// and its reply is held there.
	proxy.Freeze()
	type started struct {
		chk *streamcancel.Checker
		err error
	}
	result := make(chan started, 1)
	go func() {
		chk, err := a.Start(ctx, "chat-1")
		result <- started{chk, err}
	}()
	require.Eventually(t, func() bool { return admin.Exists(ctx, e.runKey("chat-1")).Val() == 1 }, 2*time.Second, time.Millisecond, "marker never written")
	if subscribedAtStart {
		killSubscriber()
	}

	res, err := b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	require.True(t, res.Found, "Cancel.Found")
	require.False(t, res.Pushed, "Cancel.Pushed while A has no subscriber")

	// A subscribes again on a new connection, which the freeze spares,
	// and reads every run but the one still in Start.
	proxy.Refuse(false)
	require.Eventually(t, func() bool { return a.Stats().Subscriptions > subscriptions }, 250*time.Millisecond, time.Millisecond, "A never subscribed again")
	time.Sleep(20 * time.Millisecond)
	proxy.Thaw()

	s := <-result
	require.NoError(t, s.err)
	defer s.chk.Close()
	stopped := waitDone(t, s.chk, poll+poll/50+100*time.Millisecond)
	t.Logf("run stopped %v after Start returned", stopped)
}

// A run whose Start failed open is not registered, so a probe proves
// nothing for it: the next PollInterval registers it even when its probe
// comes back. Here Start fails on a value of another type at the run key,
// which is deleted at once, between two PollIntervals that probes serve.
func TestProbeRegistersRunStartFailedOpen(t *testing.T) {
	const poll = 200 * time.Millisecond
	e := ownServer(t)
	a := e.registry(t, "node-a", streamcancel.WithPollInterval(poll))
	b := e.registry(t, "node-b")
	admin := e.client(t)
	waitSubscribed(t, a)

	other, err := a.Start(ctx, "chat-0")
	require.NoError(t, err)
	defer other.Close()
	probes := a.Stats().Probes
	require.Eventually(t, func() bool { return a.Stats().Probes > probes }, 10*poll, time.Millisecond, "no probe served")

	require.NoError(t, admin.Set(ctx, e.runKey("chat-1"), "foreign", time.Minute).Err())
	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err, "Start fails open")
	defer chk.Close()
	require.NoError(t, admin.Del(ctx, e.runKey("chat-1")).Err())
	require.Equal(t, 1, a.Stats().UnregisteredRuns, "unregistered runs after Start failed open")

	limit := poll + poll/50 + 100*time.Millisecond
	require.Eventually(t, func() bool { return a.Stats().UnregisteredRuns == 0 }, limit, time.Millisecond, "run not registered within %v", limit)
	res, err := b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	assert.True(t, res.Found, "Cancel.Found after the registration")
}
