package streamcancel_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// Three runs of one group on two nodes; another node cancels the group,
// 100 times. Every time CancelGroup counts 3 and all 3 runs stop within
// 200ms.
func TestCancelGroupStopsEveryRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		c := e.registry(t, "node-c")
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)
		waitSubscribed(t, c)

		for i := 0; i < 100; i++ {
			group := fmt.Sprintf("conv-%d", i)
			runs := make([]*streamcancel.Checker, 3)
			for j := range runs {
				node := a
				if j == 2 {
					node = c
				}
				var err error
				runs[j], err = node.Start(ctx, fmt.Sprintf("%s-run-%d", group, j), streamcancel.WithGroup(group))
				require.NoError(t, err, "iteration %d, run %d", i, j)
			}

			begin := time.Now()
			n, err := b.CancelGroup(ctx, group, streamcancel.WithReason("conversation deleted"))
			require.NoError(t, err, "iteration %d", i)
			assert.Equal(t, 3, n, "iteration %d: runs canceled", i)
			for j, chk := range runs {
				select {
				case <-chk.Context().Done():
				case <-time.After(200*time.Millisecond - time.Since(begin)):
					t.Fatalf("iteration %d: run %d still active 200ms after CancelGroup", i, j)
				}
				assert.Equal(t, "conversation deleted", causeOf(t, chk).Reason, "iteration %d, run %d", i, j)
			}
			for _, chk := range runs {
				require.NoError(t, chk.Close())
			}
		}
	})
}

// CancelGroup cancels only the group's active runs: a run of another
// group, a run in no group, a closed member and a newer run of a
// member's stream stay untouched and are not counted.
func TestCancelGroupOnlyMembers(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")

		member, err := a.Start(ctx, "chat-1", streamcancel.WithGroup("conv-1"))
		require.NoError(t, err)
		defer member.Close()
		other, err := a.Start(ctx, "chat-2", streamcancel.WithGroup("conv-2"))
		require.NoError(t, err)
		defer other.Close()
		none, err := a.Start(ctx, "chat-3")
		require.NoError(t, err)
		defer none.Close()

		closed, err := a.Start(ctx, "chat-4", streamcancel.WithGroup("conv-1"))
		require.NoError(t, err)
		require.NoError(t, closed.Close())

		// The member's stream now has a newer run outside the group.
		replaced, err := a.Start(ctx, "chat-5", streamcancel.WithGroup("conv-1"))
		require.NoError(t, err)
		defer replaced.Close()
		newer, err := b.Start(ctx, "chat-5", streamcancel.WithTakeover())
		require.NoError(t, err)
		defer newer.Close()
		waitDone(t, replaced, time.Second)

		n, err := b.CancelGroup(ctx, "conv-1")
		require.NoError(t, err)
		assert.Equal(t, 1, n, "runs canceled")
		waitDone(t, member, time.Second)
		for _, chk := range []*streamcancel.Checker{other, none, newer} {
			assert.NoError(t, chk.Err(), "run of %q", chk.StreamID())
		}

		n, err = b.CancelGroup(ctx, "conv-unknown")
		require.NoError(t, err)
		assert.Zero(t, n, "runs of a group with no members")
	})
}

// Group bookkeeping has a TTL no longer than the lease, lasts while its
// run lives through lease refreshes, and is gone when the run closes.
func TestGroupMembershipExpires(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a", streamcancel.WithTTL(300*time.Millisecond))
		b := e.registry(t, "node-b")
		c := e.client(t)
		key := e.prefix + ":group:{conv-1}:runs"

		chk, err := a.Start(ctx, "chat-1", streamcancel.WithGroup("conv-1"))
		require.NoError(t, err)
		defer chk.Close()
		ttl, err := c.PTTL(ctx, key).Result()
		require.NoError(t, err)
		assert.True(t, ttl > 0 && ttl <= 300*time.Millisecond, "group key TTL: got %v, want (0, 300ms]", ttl)

		// Three leases later the refreshes have kept the membership.
		time.Sleep(900 * time.Millisecond)
		assertKeysExpire(t, e, c)
		n, err := b.CancelGroup(ctx, "conv-1")
		require.NoError(t, err)
		assert.Equal(t, 1, n, "runs canceled after three leases")

		require.NoError(t, chk.Close())
		assert.Empty(t, e.keys(t, c), "keys after the run closed")
	})
}

// A run whose node stops refreshing leaves the group when its lease ends.
func TestGroupMemberOfDeadNodeExpires(t *testing.T) {
	m := miniredisT(t, &env{})
	e := &env{addr: m.Addr(), prefix: "sctest", mini: m}
	rdb := e.client(t)
	a, err := streamcancel.NewRegistry(rdb, streamcancel.WithKeyPrefix(e.prefix), streamcancel.WithNodeID("node-a"), streamcancel.WithTTL(time.Second))
	require.NoError(t, err)
	chk, err := a.Start(ctx, "chat-1", streamcancel.WithGroup("conv-1"))
	require.NoError(t, err)
	defer chk.Close()

	// Closing the client stops every Redis call of node-a, as a crash
	// would.
	require.NoError(t, rdb.Close())
	defer a.Close()
	m.FastForward(time.Second)
	assert.Empty(t, e.keys(t, e.client(t)), "keys one lease after the node died")
}

// Runs that start while CancelGroup runs are either canceled and counted
// or neither: the count always equals the runs that were canceled.
func TestCancelGroupRacesStart(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)

		for i := 0; i < 20; i++ {
			group := fmt.Sprintf("conv-%d", i)
			runs := make([]*streamcancel.Checker, 5)
			var wg sync.WaitGroup
			for j := range runs {
				wg.Add(1)
				go func(j int) {
					defer wg.Done()
					chk, err := a.Start(ctx, fmt.Sprintf("%s-run-%d", group, j), streamcancel.WithGroup(group))
					if err == nil {
						runs[j] = chk
					}
				}(j)
			}
			n, err := b.CancelGroup(ctx, group)
			require.NoError(t, err, "iteration %d", i)
			wg.Wait()

			time.Sleep(200 * time.Millisecond)
			canceled := 0
			for j, chk := range runs {
				require.NotNil(t, chk, "iteration %d, run %d", i, j)
				if context.Cause(chk.Context()) != nil {
					canceled++
				}
				_ = chk.Close()
			}
			assert.Equal(t, canceled, n, "iteration %d: counted against canceled runs", i)
		}
	})
}

// A run whose Start failed open joins its group when a background pass
// registers it, and a pending cancel stops it then.
func TestFailOpenRunJoinsGroupLater(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		proxy := newProxy(t, e.addr)
		a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithPollInterval(50*time.Millisecond))
		b := e.registry(t, "node-b", streamcancel.WithPendingCancel(5*time.Second))

		proxy.Refuse(true)
		proxy.Cut()
		member, err := a.Start(ctx, "chat-1", streamcancel.WithGroup("conv-1"))
		require.NoError(t, err, "Start fails open")
		defer member.Close()
		res, err := b.Cancel(ctx, "chat-2", streamcancel.WithReason("early stop"))
		require.NoError(t, err)
		require.True(t, res.Pending)
		early, err := a.Start(ctx, "chat-2")
		require.NoError(t, err, "Start fails open")
		defer early.Close()
		require.Equal(t, 2, a.Stats().UnregisteredRuns)

		proxy.Refuse(false)
		require.Eventually(t, func() bool { return a.Stats().UnregisteredRuns == 0 }, 5*time.Second, 10*time.Millisecond, "runs registered")
		assert.Equal(t, "early stop", causeOf(t, early).Reason, "pending cancel applied at registration")

		n, err := b.CancelGroup(ctx, "conv-1")
		require.NoError(t, err)
		assert.Equal(t, 1, n, "runs canceled")
		waitDone(t, member, time.Second)
	})
}

// A run whose Start failed open because Redis replied late joins its
// group as soon as a background pass finds its marker, not at the next
// lease refresh: Start's own registration may land while its join is cut
// short.
func TestSlowStartRunJoinsGroupAtRegistration(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		proxy := newProxy(t, e.addr)
		a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithPollInterval(50*time.Millisecond))
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)

		proxy.SetDelay(time.Second)
		member, err := a.Start(ctx, "chat-1", streamcancel.WithGroup("conv-1"))
		require.NoError(t, err, "Start fails open")
		defer member.Close()
		proxy.SetDelay(0)

		require.Eventually(t, func() bool { return a.Stats().UnregisteredRuns == 0 }, 5*time.Second, 10*time.Millisecond, "run registered")
		// The pass that registers the run adds it to the group right after.
		c := e.client(t)
		require.Eventually(t, func() bool {
			n, err := c.ZCard(ctx, e.prefix+":group:{conv-1}:runs").Result()
			return err == nil && n == 1
		}, time.Second, 5*time.Millisecond, "run in its group")

		n, err := b.CancelGroup(ctx, "conv-1")
		require.NoError(t, err)
		assert.Equal(t, 1, n, "runs canceled, well before the lease refresh at TTL/3")
		waitDone(t, member, time.Second)
	})
}

// Group names are opaque: names with braces, '%', ':', spaces, newlines,
// non-UTF-8 bytes or the maximum length, and names that look like another
// name escaped, each cancel their own run and no other.
func TestGroupNamesStayApart(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)

		groups := []string{
			"{", "}", "%", ":", "a}b", "a%7Db", "a%257Db", "{a}", "g:{x}:runs",
			"会话", "\xff\xfe", "a b\nc", strings.Repeat("}", streamcancel.MaxGroupLen),
		}
		runs := make([]*streamcancel.Checker, len(groups))
		for i, group := range groups {
			chk, err := a.Start(ctx, fmt.Sprintf("chat-%d", i), streamcancel.WithGroup(group))
			require.NoError(t, err, "Start in group %q", group)
			defer chk.Close()
			runs[i] = chk
		}

		for i, group := range groups {
			n, err := b.CancelGroup(ctx, group)
			require.NoError(t, err, "group %q", group)
			assert.Equal(t, 1, n, "runs canceled in group %q", group)
			waitDone(t, runs[i], time.Second)
			for j := i + 1; j < len(runs); j++ {
				require.NoError(t, runs[j].Err(), "run in group %q after canceling group %q", groups[j], group)
			}
		}
		assertKeysExpire(t, e, e.client(t))
	})
}

// go-redis sends a call again on a new connection when the connection
// breaks before the reply arrives, so a registration can run twice in
// Redis: the second call finds the marker that the first one created. The
// run still joins its group, whether Start registered it or a background
// pass did after Start failed open, and CancelGroup cancels it.
func TestRegistrationSentTwiceJoinsGroup(t *testing.T) {
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	rdb := clientAt(t, proxy.Addr())
	a := e.registryOn(t, rdb, "node-a", streamcancel.WithPollInterval(50*time.Millisecond))
	b := e.registry(t, "node-b")
	c := e.client(t)
	waitSubscribed(t, a)

	// markerWritten reports whether the marker of streamID is in Redis.
	markerWritten := func(streamID string) func() bool {
		return func() bool {
			n, err := c.Exists(ctx, e.runKey(streamID)).Result()
			return err == nil && n == 1
		}
	}

	t.Run("Start", func(t *testing.T) {
		require.NoError(t, rdb.Ping(ctx).Err(), "a pooled connection, so the call needs no dial")
		cutReplyInFlight(proxy, markerWritten("chat-1"))
		chk, err := a.Start(ctx, "chat-1", streamcancel.WithGroup("conv-1"))
		require.NoError(t, err)
		defer chk.Close()
		require.Zero(t, a.Stats().UnregisteredRuns, "Start registered the run")

		n, err := b.CancelGroup(ctx, "conv-1")
		require.NoError(t, err)
		assert.Equal(t, 1, n, "runs canceled")
		waitDone(t, chk, time.Second)
	})

	t.Run("background pass", func(t *testing.T) {
		proxy.Refuse(true)
		proxy.Cut()
		chk, err := a.Start(ctx, "chat-2", streamcancel.WithGroup("conv-2"))
		require.NoError(t, err, "Start fails open")
		defer chk.Close()

		cutReplyInFlight(proxy, markerWritten("chat-2"))
		proxy.Refuse(false)
		require.Eventually(t, func() bool { return a.Stats().UnregisteredRuns == 0 }, 5*time.Second, 10*time.Millisecond, "run registered")
		// The pass adds the run to its group right after it registers it,
		// well before the lease refresh at TTL/3.
		require.Eventually(t, func() bool {
			n, err := c.ZCard(ctx, e.prefix+":group:{conv-2}:runs").Result()
			return err == nil && n == 1
		}, time.Second, 5*time.Millisecond, "run in its group")

		n, err := b.CancelGroup(ctx, "conv-2")
		require.NoError(t, err)
		assert.Equal(t, 1, n, "runs canceled")
		waitDone(t, chk, time.Second)
	})
}
