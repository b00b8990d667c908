package streamcancel_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// closeAfterEnd closes chk after its context ends and the loop takes
// delay to stop, as a loop that honours its context does.
func closeAfterEnd(chk *streamcancel.Checker, delay time.Duration) {
	go func() {
		<-chk.Context().Done()
		time.Sleep(delay)
		_ = chk.Close()
	}()
}

// A loop that ignores its context for 2s is not reported stopped: a
// CancelAndWait with a 1s timeout returns a timeout error. A loop that
// honours its context is confirmed within 300ms.
func TestCancelAndWaitConfirmsEnd(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)
		waitSubscribed(t, b)

		stubborn, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		loopEnded := make(chan struct{})
		go func() {
			defer close(loopEnded)
			time.Sleep(2 * time.Second)
			_ = stubborn.Close()
		}()

		waitCtx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		begin := time.Now()
		res, err := b.CancelAndWait(waitCtx, "chat-1")
		assert.ErrorIs(t, err, context.DeadlineExceeded, "CancelAndWait of a loop that keeps going")
		assert.True(t, res.Found, "the cancel is recorded")
		assert.GreaterOrEqual(t, time.Since(begin), 900*time.Millisecond, "return before the timeout")
		<-loopEnded

		honest, err := a.Start(ctx, "chat-2")
		require.NoError(t, err)
		closeAfterEnd(honest, 20*time.Millisecond)

		begin = time.Now()
		res, err = b.CancelAndWait(ctx, "chat-2")
		elapsed := time.Since(begin)
		require.NoError(t, err)
		assert.True(t, res.Found)
		assert.Equal(t, "node-a", res.NodeID)
		assert.Less(t, elapsed, 300*time.Millisecond, "CancelAndWait of a loop that honours its context")
		assert.GreaterOrEqual(t, res.StopDuration, 20*time.Millisecond, "StopDuration")
		assert.Less(t, res.StopDuration, elapsed, "StopDuration")
	})
}

// A stream with no active run returns Found false at once.
func TestCancelAndWaitNoRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		b := e.registry(t, "node-b")
		begin := time.Now()
		res, err := b.CancelAndWait(ctx, "chat-1")
		require.NoError(t, err)
		assert.False(t, res.Found)
		assert.Less(t, time.Since(begin), 200*time.Millisecond)
		assert.Empty(t, e.keys(t, e.client(t)))
	})
}

// A run that ends as soon as its cancel arrives, before the wait begins to
// listen, is confirmed at once from its ended record, not at the next
// poll 5s later, on the run's own node and on another node.
func TestCancelAndWaitRunEndsBeforeWait(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a", streamcancel.WithPollInterval(5*time.Second))
		b := e.registry(t, "node-b", streamcancel.WithPollInterval(5*time.Second))
		waitSubscribed(t, a)

		for i := 0; i < 20; i++ {
			for _, waiter := range []*streamcancel.Registry{a, b} {
				id := fmt.Sprintf("chat-%d-%s", i, waiter.NodeID())
				chk, err := a.Start(ctx, id)
				require.NoError(t, err)
				context.AfterFunc(chk.Context(), func() { _ = chk.Close() })

				waitCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
				res, err := waiter.CancelAndWait(waitCtx, id)
				cancel()
				require.NoError(t, err, "iteration %d, waiting on %s", i, waiter.NodeID())
				assert.True(t, res.Found)
			}
		}
	})
}

// When the push of the end is lost, the ended record confirms the end at
// the waiter's next poll.
func TestCancelAndWaitReadsEndedRecord(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b", streamcancel.WithPollInterval(50*time.Millisecond))
		c := e.client(t)
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		go func() {
			<-chk.Context().Done()
			// The wait record now names a node that nobody subscribes
			// to, so the push of the end is lost.
			waitKey := e.prefix + ":{chat-1}:wait"
			fields, _ := c.HKeys(ctx, waitKey).Result()
			for _, field := range fields {
				_ = c.HDel(ctx, waitKey, field).Err()
				_ = c.HSet(ctx, waitKey, strings.TrimSuffix(field, "node-b")+"node-x", 1).Err()
			}
			_ = chk.Close()
		}()

		begin := time.Now()
		res, err := b.CancelAndWait(ctx, "chat-1")
		require.NoError(t, err)
		assert.True(t, res.Found)
		assert.Less(t, time.Since(begin), time.Second)
		assert.Zero(t, b.Stats().PushesReceived, "pushes received by the waiter")
		assertKeysExpire(t, e, c)
	})
}

// A run's ended record lasts as long as the longest wait for the run, so
// a waiter whose push is lost and whose PollInterval is longer than the
// record's one-minute minimum still finds it before its wait ends.
func TestEndedRecordOutlastsLongWait(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		c := e.client(t)
		waitSubscribed(t, a)
		waitSubscribed(t, b)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		closeAfterEnd(chk, 0)

		waitCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		_, err = b.CancelAndWait(waitCtx, "chat-1")
		require.NoError(t, err)

		ttl, err := c.PTTL(ctx, e.prefix+":{chat-1}:ended").Result()
		require.NoError(t, err)
		assert.Greater(t, ttl, 2*time.Minute+50*time.Second, "TTL of the ended record after a wait of up to 3m")
		assert.LessOrEqual(t, ttl, 3*time.Minute+time.Second, "TTL of the ended record")
	})
}

// A registry that closes while CancelAndWait waits ends the call with
// ErrClosed, not success.
func TestCancelAndWaitRegistryClosed(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		go func() {
			time.Sleep(100 * time.Millisecond)
			_ = b.Close()
		}()
		res, err := b.CancelAndWait(ctx, "chat-1")
		assert.ErrorIs(t, err, streamcancel.ErrClosed)
		assert.True(t, res.Found)
	})
}

// A registry that closes while its loop still runs removes the run's
// marker but does not report the run ended: the waiter times out.
func TestCancelAndWaitRunNodeClosed(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b", streamcancel.WithPollInterval(20*time.Millisecond))

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()
		go func() {
			<-chk.Context().Done()
			// The loop keeps going while its registry closes.
			_ = a.Close()
		}()

		waitCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		res, err := b.CancelAndWait(waitCtx, "chat-1")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.True(t, res.Found)
	})
}
