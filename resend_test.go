package streamcancel_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// go-redis sends a call again on a new connection when the connection
// breaks before the reply arrives. A cancel whose first send stopped a run
// that closed at once finds no run at its second send. Each cancel call
// still returns the result of its first send: Cancel reports the run found
// and stores no pending cancel that would stop the next run,
// CancelAndWait confirms the end, and CancelGroup counts every run it
// stopped.
func TestCancelSentTwiceKeepsFirstResult(t *testing.T) {
	e := ownServer(t)
	proxy := newProxy(t, e.addr)
	rdb := clientAt(t, proxy.Addr())
	a := e.registry(t, "node-a")
	b := e.registryOn(t, rdb, "node-b", streamcancel.WithPendingCancel(10*time.Second))
	c := e.client(t)
	waitSubscribed(t, a)

	// start starts a run on A whose loop closes it as soon as it is
	// canceled.
	start := func(t *testing.T, streamID string, opts ...streamcancel.StartOption) *streamcancel.Checker {
		chk, err := a.Start(ctx, streamID, opts...)
		require.NoError(t, err)
		context.AfterFunc(chk.Context(), func() { _ = chk.Close() })
		return chk
	}

	// closed reports whether the marker of every stream in ids is gone.
	closed := func(ids ...string) func() bool {
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = e.runKey(id)
		}
		return func() bool {
			n, err := c.Exists(ctx, keys...).Result()
			return err == nil && n == 0
		}
	}

	t.Run("Cancel", func(t *testing.T) {
		chk := start(t, "chat-1")
		require.NoError(t, rdb.Ping(ctx).Err(), "a pooled connection, so the call needs no dial")
		cutReplyInFlight(proxy, closed("chat-1"))
		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		assert.True(t, res.Found, "Found")
		assert.False(t, res.Pending, "Pending")
		assert.Equal(t, "node-a", res.NodeID)
		require.ErrorIs(t, chk.Err(), streamcancel.ErrCanceled)

		next := start(t, "chat-1")
		defer next.Close()
		assert.NoError(t, next.Err(), "the next run of the stream")
	})

	t.Run("CancelAndWait", func(t *testing.T) {
		start(t, "chat-2")
		require.NoError(t, rdb.Ping(ctx).Err(), "a pooled connection, so the call needs no dial")
		cutReplyInFlight(proxy, closed("chat-2"))
		waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		res, err := b.CancelAndWait(waitCtx, "chat-2")
		require.NoError(t, err)
		assert.True(t, res.Found, "Found")
		assert.False(t, res.Pending, "Pending")
	})

	t.Run("CancelGroup", func(t *testing.T) {
		ids := make([]string, 3)
		for i := range ids {
			ids[i] = fmt.Sprintf("chat-3-%d", i)
			start(t, ids[i], streamcancel.WithGroup("conv-3"))
		}
		require.NoError(t, rdb.Ping(ctx).Err(), "a pooled connection, so the call needs no dial")
		cutReplyInFlight(proxy, closed(ids...))
		n, err := b.CancelGroup(ctx, "conv-3")
		require.NoError(t, err)
		assert.Equal(t, 3, n, "runs canceled")
	})

	assertKeysExpire(t, e, c)
}
