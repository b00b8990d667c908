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

// The tests in this file inject real faults into cancel-and-wait, groups,
// pending cancels and takeovers.

// Redis is restarted empty while CancelAndWait waits for a loop that keeps
// going: the call never reports success and returns its context's error.
func TestCancelAndWaitRedisRestarted(t *testing.T) {
	const poll = 100 * time.Millisecond
	e := ownServer(t)
	a := e.registry(t, "node-a", streamcancel.WithPollInterval(poll), streamcancel.WithTTL(time.Second))
	b := e.registry(t, "node-b", streamcancel.WithPollInterval(poll))
	waitSubscribed(t, a)
	waitSubscribed(t, b)

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer chk.Close()

	type result struct {
		res streamcancel.CancelResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		waitCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		res, err := b.CancelAndWait(waitCtx, "chat-1")
		done <- result{res, err}
	}()
	waitDone(t, chk, time.Second)
	e.server.Stop()
	time.Sleep(500 * time.Millisecond)
	e.server.Restart()

	r := <-done
	assert.ErrorIs(t, r.err, context.DeadlineExceeded, "CancelAndWait of a loop that keeps going")
	assert.True(t, r.res.Found, "Found")
}

// The waiting node's subscriber is half-open, so the push of the end is
// lost: CancelAndWait confirms the end from the stored record within
// PollInterval + 300ms after the run's Close.
func TestCancelAndWaitHalfOpenWaiter(t *testing.T) {
	const poll = 500 * time.Millisecond
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	a := e.registry(t, "node-a", streamcancel.WithPollInterval(poll))
	b := e.registryOn(t, clientAt(t, proxy.Addr()), "node-b", streamcancel.WithPollInterval(poll))
	waitSubscribed(t, a)
	waitSubscribed(t, b)

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	closed := make(chan time.Time, 1)
	context.AfterFunc(chk.Context(), func() {
		time.Sleep(100 * time.Millisecond)
		closed <- time.Now()
		_ = chk.Close()
	})

	require.Equal(t, 1, proxy.FreezeSubscribers(), "connections frozen")
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := b.CancelAndWait(waitCtx, "chat-1")
	require.NoError(t, err)
	assert.True(t, res.Found, "Found")
	late := time.Since(<-closed)
	t.Logf("end confirmed %v after Close, with a poll interval of %v", late, poll)
	assert.Less(t, late, poll+300*time.Millisecond, "confirmation after Close")
}

// CancelGroup while the proxy resets the canceling node's connections
// every few milliseconds, with loops that close as soon as they are
// canceled: a call without an error counts exactly the runs it stopped,
// and a call with one counts at most those.
func TestCancelGroupConnectionsCut(t *testing.T) {
	const groups, perGroup = 20, 5
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	a := e.registry(t, "node-a", streamcancel.WithPollInterval(100*time.Millisecond))
	b := e.registryOn(t, clientAt(t, proxy.Addr()), "node-b")
	waitSubscribed(t, a)

	runs := make([][]*streamcancel.Checker, groups)
	for g := range runs {
		for i := 0; i < perGroup; i++ {
			chk, err := a.Start(ctx, fmt.Sprintf("g%d-run-%d", g, i), streamcancel.WithGroup(fmt.Sprintf("g%d", g)))
			require.NoError(t, err)
			context.AfterFunc(chk.Context(), func() { _ = chk.Close() })
			defer chk.Close()
			runs[g] = append(runs[g], chk)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(1+i%3) * time.Millisecond):
				proxy.Cut()
			}
		}
	}()
	counts := make([]int, groups)
	errs := make([]error, groups)
	for g := range runs {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		counts[g], errs[g] = b.CancelGroup(callCtx, fmt.Sprintf("g%d", g))
		cancel()
	}
	close(stop)
	wg.Wait()
	// A run whose push was lost stops at A's next poll.
	time.Sleep(300 * time.Millisecond)

	failed := 0
	for g, group := range runs {
		stopped := 0
		for _, chk := range group {
			if chk.Err() != nil {
				stopped++
			}
		}
		if errs[g] != nil {
			failed++
			assert.LessOrEqual(t, counts[g], stopped, "group %d: count with error %v", g, errs[g])
			continue
		}
		assert.Equal(t, stopped, counts[g], "group %d: count", g)
	}
	t.Logf("%d of %d CancelGroup calls returned an error", failed, groups)
}

// A churn of runs in groups, cancels that wait, pending cancels consumed
// or left, takeovers and runs abandoned on a node that dies. At every
// sample each key under the prefix has a TTL of at most a minute, the
// longest the library gives, and once the leases have passed only the
// records that outlive runs by design are left: ended runs and cancel
// calls.
func TestEveryKeyHasTTLSemanticsChurn(t *testing.T) {
	const ttl = time.Second
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	dying := e.registryOn(t, clientAt(t, proxy.Addr()), "node-x", streamcancel.WithTTL(ttl))
	a := e.registry(t, "node-a", streamcancel.WithTTL(ttl), streamcancel.WithPollInterval(50*time.Millisecond))
	b := e.registry(t, "node-b", streamcancel.WithTTL(ttl), streamcancel.WithPendingCancel(300*time.Millisecond), streamcancel.WithPollInterval(50*time.Millisecond))
	c := e.client(t)
	waitSubscribed(t, a)
	waitSubscribed(t, b)

	stopSampling := sampleTTLs(e, c, time.Minute)

	var open []*streamcancel.Checker
	for i := 0; i < 700; i++ {
		id := fmt.Sprintf("churn-%d", i)
		group := fmt.Sprintf("conv-%d", i%7)
		switch i % 7 {
		case 0: // finishes
			chk, err := a.Start(ctx, id, streamcancel.WithGroup(group))
			require.NoError(t, err)
			require.NoError(t, chk.Close())
		case 1: // canceled and waited for
			chk, err := a.Start(ctx, id, streamcancel.WithGroup(group))
			require.NoError(t, err)
			context.AfterFunc(chk.Context(), func() { _ = chk.Close() })
			waitCtx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = b.CancelAndWait(waitCtx, id)
			cancel()
			require.NoError(t, err)
		case 2: // a wait that times out, then the run closes
			chk, err := a.Start(ctx, id)
			require.NoError(t, err)
			waitCtx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
			_, _ = b.CancelAndWait(waitCtx, id)
			cancel()
			open = append(open, chk)
		case 3: // a pending cancel, consumed by every other Start
			res, err := b.Cancel(ctx, id, streamcancel.WithReason("early stop"))
			require.NoError(t, err)
			require.True(t, res.Pending)
			if i%2 == 0 {
				chk, err := a.Start(ctx, id)
				require.NoError(t, err)
				require.True(t, chk.Cancelled(), "Start consumed the pending cancel")
				open = append(open, chk)
			}
		case 4: // taken over by another node
			old, err := a.Start(ctx, id, streamcancel.WithGroup(group))
			require.NoError(t, err)
			next, err := b.Start(ctx, id, streamcancel.WithTakeover(), streamcancel.WithGroup(group))
			require.NoError(t, err)
			open = append(open, old, next)
		case 5: // abandoned on the node that dies, after its group's cancel
			_, err := dying.Start(ctx, id, streamcancel.WithGroup(group))
			require.NoError(t, err)
			_, err = b.CancelGroup(ctx, group)
			require.NoError(t, err)
		case 6: // abandoned on the node that dies while a wait times out
			_, err := dying.Start(ctx, id, streamcancel.WithGroup(group))
			require.NoError(t, err)
			waitCtx, cancel := context.WithTimeout(ctx, 2*time.Millisecond)
			_, _ = a.CancelAndWait(waitCtx, id)
			cancel()
		}
		if len(open) >= 50 {
			for _, chk := range open {
				_ = chk.Close()
			}
			open = nil
		}
	}
	for _, chk := range open {
		_ = chk.Close()
	}
	proxy.Refuse(true)
	proxy.Cut()

	time.Sleep(ttl + 500*time.Millisecond)
	n, violations := stopSampling()
	t.Logf("%d samples of every key's PTTL, %d keys without a TTL or with one over a minute", n, len(violations))
	assert.Empty(t, violations, "keys without a TTL or with one over a minute")
	for _, key := range e.keys(t, c) {
		assert.True(t, strings.HasSuffix(key, ":ended"), "key %s left after the leases; only ended records stay, for their TTL", key)
	}
}

// Node A cannot reach Redis for 1s, shorter than its lease. Meanwhile
// node C takes over A's run, whose push A misses, and node B cancels a
// stream whose Start on A failed open, which leaves a pending cancel. Once
// A reaches Redis again, the replaced run ends as taken over by C, C's run
// keeps the stream, and A's late run registers and stops with B's reason.
func TestTakeoverAndPendingCancelDuringOutage(t *testing.T) {
	const poll = 100 * time.Millisecond
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithPollInterval(poll), streamcancel.WithTTL(3*time.Second))
	b := e.registry(t, "node-b", streamcancel.WithPendingCancel(10*time.Second))
	c := e.registry(t, "node-c")
	waitSubscribed(t, a)

	old, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer old.Close()

	proxy.Refuse(true)
	proxy.Cut()
	next, err := c.Start(ctx, "chat-1", streamcancel.WithTakeover())
	require.NoError(t, err)
	defer next.Close()
	late, err := a.Start(ctx, "chat-2")
	require.NoError(t, err, "Start fails open")
	defer late.Close()
	res, err := b.Cancel(ctx, "chat-2", streamcancel.WithReason("early stop"))
	require.NoError(t, err)
	require.True(t, res.Pending, "Pending")
	stayActive(t, old, time.Second)
	assert.NoError(t, late.Err(), "run started during the outage")

	proxy.Refuse(false)
	back := time.Now()
	waitDone(t, old, 2*time.Second)
	t.Logf("replaced run ended %v after the outage", time.Since(back))
	assert.Equal(t, "node-c", causeOf(t, old).TakenOverBy)
	waitDone(t, late, 2*time.Second)
	assert.Equal(t, "early stop", causeOf(t, late).Reason)

	time.Sleep(3 * poll)
	assert.NoError(t, next.Err(), "the run that took over")
	assert.Zero(t, a.Stats().Conflicts, "conflicts on A")
	res, err = b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	assert.True(t, res.Found, "Found")
	assert.Equal(t, "node-c", res.NodeID, "node of the run that holds the stream")
}
