package streamcancel_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// A Start with WithTakeover on another node replaces the active run: the
// new run owns the stream at once, and the old run ends with a cause that
// names the node that took it over.
func TestTakeoverReplacesRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		c := e.registry(t, "node-c")
		waitSubscribed(t, a)

		old, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer old.Close()

		_, err = b.Start(ctx, "chat-1")
		require.ErrorIs(t, err, streamcancel.ErrAlreadyActive, "Start without WithTakeover")

		next, err := b.Start(ctx, "chat-1", streamcancel.WithTakeover())
		require.NoError(t, err)
		defer next.Close()

		ce := causeOf(t, old)
		assert.Equal(t, "node-b", ce.TakenOverBy)
		assert.ErrorIs(t, old.Err(), streamcancel.ErrTakenOver)
		assert.ErrorIs(t, old.Err(), streamcancel.ErrCanceled)
		assert.NoError(t, next.Err())

		// Closing the old run leaves the new run's marker alone.
		require.NoError(t, old.Close())
		res, err := c.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		assert.True(t, res.Found)
		assert.Equal(t, "node-b", res.NodeID)
		waitDone(t, next, time.Second)
	})
}

// An old run whose takeover push is lost learns of the takeover at its
// next poll, even when the new run has ended meanwhile, and it does not
// register again.
func TestTakeoverFoundByPoll(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.readingRegistry(t, "node-a", streamcancel.WithPollInterval(30*time.Millisecond))
		b := e.registry(t, "node-b")
		c := e.client(t)

		old, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer old.Close()

		// The takeover push goes to the node in the marker, which nobody
		// subscribes to, and the new run ends before the old run polls.
		require.NoError(t, c.HSet(ctx, e.runKey("chat-1"), "node", "node-x").Err())
		next, err := b.Start(ctx, "chat-1", streamcancel.WithTakeover())
		require.NoError(t, err)
		require.NoError(t, next.Close())

		assert.Equal(t, "node-b", causeOf(t, old).TakenOverBy)
		time.Sleep(100 * time.Millisecond)
		exists, err := c.Exists(ctx, e.runKey("chat-1")).Result()
		require.NoError(t, err)
		assert.Zero(t, exists, "marker of the old run after its polls")

		require.NoError(t, old.Close())
		assert.Empty(t, e.keys(t, c), "keys after both runs closed")
	})
}

// A takeover on the run's own node cancels the old run at once, and the
// old run's Close leaves the stream to the new run.
func TestTakeoverOnSameNode(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")

		old, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		next, err := a.Start(ctx, "chat-1", streamcancel.WithTakeover())
		require.NoError(t, err)
		defer next.Close()

		assert.True(t, old.Cancelled(), "old run's Cancelled() after the takeover")
		assert.Equal(t, "node-a", causeOf(t, old).TakenOverBy)
		require.NoError(t, old.Close())
		assert.NoError(t, next.Err())
		assert.Equal(t, 1, a.Stats().ActiveRuns)

		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		assert.True(t, res.Found)
		waitDone(t, next, time.Second)
	})
}

// A takeover that races a Cancel: the old run always ends, and the new
// run is canceled exactly when the Cancel found it.
func TestTakeoverRacesCancel(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		c := e.registry(t, "node-c")

		newRunCanceled := 0
		for i := 0; i < 30; i++ {
			id := fmt.Sprintf("race-%d", i)
			old, err := a.Start(ctx, id)
			require.NoError(t, err, "iteration %d", i)

			var next *streamcancel.Checker
			var res streamcancel.CancelResult
			var startErr, cancelErr error
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				next, startErr = b.Start(ctx, id, streamcancel.WithTakeover())
			}()
			go func() {
				defer wg.Done()
				res, cancelErr = c.Cancel(ctx, id)
			}()
			wg.Wait()
			require.NoError(t, startErr, "iteration %d", i)
			require.NoError(t, cancelErr, "iteration %d", i)
			require.True(t, res.Found, "iteration %d: a run was active throughout", i)

			assert.ErrorIs(t, causeOf(t, old), streamcancel.ErrCanceled, "iteration %d: old run", i)
			if res.NodeID == "node-b" {
				newRunCanceled++
				waitDone(t, next, 2*time.Second)
			} else {
				assert.Equal(t, "node-a", res.NodeID, "iteration %d", i)
				assert.NoError(t, next.Err(), "iteration %d: new run after a cancel of the old run", i)
			}
			_ = old.Close()
			_ = next.Close()
		}
		t.Logf("the Cancel found the new run in %d of 30 iterations", newRunCanceled)
	})
}

// Two takeovers at once: both Starts succeed, exactly one new run keeps
// the stream, and every other run ends as taken over.
func TestTwoTakeoversAtOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		nodes := []*streamcancel.Registry{e.registry(t, "node-b"), e.registry(t, "node-c")}
		d := e.registry(t, "node-d")

		for i := 0; i < 30; i++ {
			id := fmt.Sprintf("race-%d", i)
			old, err := a.Start(ctx, id)
			require.NoError(t, err, "iteration %d", i)

			runs := make([]*streamcancel.Checker, 2)
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for j := range nodes {
				wg.Add(1)
				go func(j int) {
					defer wg.Done()
					runs[j], errs[j] = nodes[j].Start(ctx, id, streamcancel.WithTakeover())
				}(j)
			}
			wg.Wait()
			require.NoError(t, errs[0], "iteration %d", i)
			require.NoError(t, errs[1], "iteration %d", i)

			assert.ErrorIs(t, causeOf(t, old), streamcancel.ErrTakenOver, "iteration %d: old run", i)
			res, err := d.Cancel(ctx, id)
			require.NoError(t, err, "iteration %d", i)
			require.True(t, res.Found, "iteration %d", i)

			survivor, loser := runs[0], runs[1]
			if res.NodeID == "node-c" {
				survivor, loser = runs[1], runs[0]
			}
			assert.ErrorIs(t, causeOf(t, loser), streamcancel.ErrTakenOver, "iteration %d: losing new run", i)
			assert.NotErrorIs(t, causeOf(t, survivor), streamcancel.ErrTakenOver, "iteration %d: surviving run, canceled by the check", i)

			_ = old.Close()
			_ = runs[0].Close()
			_ = runs[1].Close()
		}
	})
}

// Every kind of key the new cancel semantics write has a TTL: group
// members, takeover records, pending cancels, wait records and ended
// records.
func TestEveryNewKeyHasTTL(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b", streamcancel.WithPendingCancel(time.Minute))
		c := e.client(t)

		old, err := a.Start(ctx, "chat-1", streamcancel.WithGroup("conv-1"))
		require.NoError(t, err)
		defer old.Close()
		next, err := b.Start(ctx, "chat-1", streamcancel.WithTakeover())
		require.NoError(t, err)
		defer next.Close()
		waitDone(t, old, time.Second)

		_, err = b.Cancel(ctx, "chat-2")
		require.NoError(t, err)

		stubborn, err := a.Start(ctx, "chat-3")
		require.NoError(t, err)
		waitCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err = b.CancelAndWait(waitCtx, "chat-3")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		waitTTL, err := c.PTTL(ctx, e.prefix+":{chat-3}:wait").Result()
		require.NoError(t, err)
		assert.True(t, waitTTL > 0 && waitTTL <= 1050*time.Millisecond, "TTL of the wait record: got %v, want (0, 1.05s]", waitTTL)
		require.NoError(t, stubborn.Close())

		for _, key := range []string{"group:{conv-1}:runs", "{chat-1}:over", "{chat-1}:run", "{chat-2}:pending", "{chat-3}:ended"} {
			assert.Contains(t, e.keys(t, c), e.prefix+":"+key)
		}
		assertKeysExpire(t, e, c)
	})
}

// Two takeovers on one node while Redis is slow, the first abandoned by
// its context: the second still cancels the run they both replace at once,
// without waiting for Redis, and holds the stream on its node.
func TestAbandonedTakeoverHandsOverLocalRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		proxy := newProxy(t, e.addr)
		a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a")
		waitSubscribed(t, a)

		first, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer first.Close()

		// Replies, pushes included, now take 3s.
		proxy.SetDelay(3 * time.Second)
		abandonCtx, abandon := context.WithCancel(ctx)
		abandoned := make(chan error, 1)
		go func() {
			_, err := a.Start(abandonCtx, "chat-1", streamcancel.WithTakeover())
			abandoned <- err
		}()
		time.Sleep(50 * time.Millisecond)

		type started struct {
			chk *streamcancel.Checker
			err error
		}
		second := make(chan started, 1)
		go func() {
			chk, err := a.Start(ctx, "chat-1", streamcancel.WithTakeover())
			second <- started{chk, err}
		}()
		time.Sleep(50 * time.Millisecond)
		abandon()
		require.ErrorIs(t, <-abandoned, context.Canceled, "abandoned Start")

		got := <-second
		require.NoError(t, got.err, "second Start fails open")
		defer got.chk.Close()
		waitDone(t, first, time.Second)
		assert.Equal(t, "node-a", causeOf(t, first).TakenOverBy)

		_ = first.Close()
		third, err := a.Start(ctx, "chat-1")
		if err == nil {
			_ = third.Close()
		}
		require.ErrorIs(t, err, streamcancel.ErrAlreadyActive, "Start without WithTakeover while the second run holds the stream")
		proxy.SetDelay(0)
	})
}

// A takeover on one node abandoned by its context after a newer takeover
// of the same stream has returned: the run they both replace is canceled
// at once, without waiting for Redis.
func TestAbandonedTakeoverAfterNewerOne(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		proxy := newProxy(t, e.addr)
		// Polls would find the takeover record; the test needs the local path.
		a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithPollInterval(5*time.Second))
		waitSubscribed(t, a)

		first, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer first.Close()

		// The replies to the first takeover, and the pushes it sends, take 3s.
		proxy.SetDelay(3 * time.Second)
		abandonCtx, abandon := context.WithCancel(ctx)
		abandoned := make(chan error, 1)
		go func() {
			_, err := a.Start(abandonCtx, "chat-1", streamcancel.WithTakeover())
			abandoned <- err
		}()
		time.Sleep(50 * time.Millisecond)
		proxy.SetDelay(0)

		second, err := a.Start(ctx, "chat-1", streamcancel.WithTakeover())
		require.NoError(t, err)
		defer second.Close()
		abandon()
		require.ErrorIs(t, <-abandoned, context.Canceled, "abandoned Start")

		waitDone(t, first, 500*time.Millisecond)
		assert.Equal(t, "node-a", causeOf(t, first).TakenOverBy)
		assert.NoError(t, second.Err(), "the newer run")
	})
}
