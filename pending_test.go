package streamcancel_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// Without WithPendingCancel, a Stop pressed 50ms before the stream
// registers finds nothing, stores nothing and does not stop the run.
func TestCancelBeforeStartWithoutPending(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")

		res, err := b.Cancel(ctx, "chat-9")
		require.NoError(t, err)
		assert.False(t, res.Found)
		assert.False(t, res.Pending)
		assert.Empty(t, e.keys(t, e.client(t)), "keys after a cancel of no run")

		time.Sleep(50 * time.Millisecond)
		chk, err := a.Start(ctx, "chat-9")
		require.NoError(t, err)
		defer chk.Close()
		stayActive(t, chk, 100*time.Millisecond)
	})
}

// With WithPendingCancel, a Stop pressed 50ms before the stream registers
// is kept: the run's first Cancelled call returns true, so the loop sends
// no chunk, and the cause carries the reason.
func TestPendingCancelStopsNextStart(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b", streamcancel.WithPendingCancel(time.Second))
		c := e.client(t)

		res, err := b.Cancel(ctx, "chat-9", streamcancel.WithReason("stopped early"))
		require.NoError(t, err)
		assert.False(t, res.Found)
		assert.True(t, res.Pending)
		ttl, err := c.PTTL(ctx, e.prefix+":{chat-9}:pending").Result()
		require.NoError(t, err)
		assert.True(t, ttl > 0 && ttl <= time.Second, "TTL of the pending record: got %v, want (0, 1s]", ttl)

		time.Sleep(50 * time.Millisecond)
		chk, err := a.Start(ctx, "chat-9")
		require.NoError(t, err)
		defer chk.Close()

		assert.Equal(t, 0, stream(chk, time.Millisecond, 10), "chunks sent")
		assert.ErrorIs(t, chk.Err(), streamcancel.ErrCanceled)
		assert.Equal(t, "stopped early", causeOf(t, chk).Reason)

		// The record stopped one run; the next run of the ID goes on.
		require.NoError(t, chk.Close())
		next, err := a.Start(ctx, "chat-9")
		require.NoError(t, err)
		defer next.Close()
		stayActive(t, next, 50*time.Millisecond)
	})
}

// A pending cancel applies within its TTL and not a moment after it.
func TestPendingCancelExpiry(t *testing.T) {
	t.Run("miniredis", func(t *testing.T) {
		e := &env{prefix: "sctest"}
		for _, tc := range []struct {
			name     string
			elapsed  time.Duration
			canceled bool
		}{
			{"one moment before expiry", 999 * time.Millisecond, true},
			{"at expiry", time.Second, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				m := miniredisT(t, e)
				a := e.registry(t, "node-a", streamcancel.WithPendingCancel(time.Second))

				res, err := a.Cancel(ctx, "chat-9")
				require.NoError(t, err)
				require.True(t, res.Pending)
				m.FastForward(tc.elapsed)

				chk, err := a.Start(ctx, "chat-9")
				require.NoError(t, err)
				defer chk.Close()
				assert.Equal(t, tc.canceled, chk.Cancelled(), "Cancelled() after %v", tc.elapsed)
			})
		}
	})
	t.Run("redis", func(t *testing.T) {
		eachRealRedis(t, func(t *testing.T, e *env) {
			a := e.registry(t, "node-a", streamcancel.WithPendingCancel(100*time.Millisecond))

			res, err := a.Cancel(ctx, "chat-9")
			require.NoError(t, err)
			require.True(t, res.Pending)
			time.Sleep(150 * time.Millisecond)

			chk, err := a.Start(ctx, "chat-9")
			require.NoError(t, err)
			defer chk.Close()
			assert.False(t, chk.Cancelled(), "Cancelled() after the pending cancel expired")
			assert.Nil(t, context.Cause(chk.Context()))
		})
	})
}

// A pending cancel is stored only when no run is active. A cancel of an
// active run stops that run and leaves no record for the next one.
func TestPendingCancelOnlyWithoutRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a", streamcancel.WithPendingCancel(time.Second))

		first, err := a.Start(ctx, "chat-9")
		require.NoError(t, err)
		res, err := a.Cancel(ctx, "chat-9")
		require.NoError(t, err)
		assert.True(t, res.Found)
		assert.False(t, res.Pending)
		require.NoError(t, first.Close())

		next, err := a.Start(ctx, "chat-9")
		require.NoError(t, err)
		defer next.Close()
		stayActive(t, next, 50*time.Millisecond)
	})
}

func TestPendingCancelOptionLimits(t *testing.T) {
	e := &env{prefix: "sctest"}
	for _, ttl := range []time.Duration{0, time.Millisecond, 2 * time.Hour} {
		_, err := streamcancel.NewRegistry(clientAt(t, "127.0.0.1:1"), streamcancel.WithPendingCancel(ttl), streamcancel.WithKeyPrefix(e.prefix))
		assert.ErrorIs(t, err, streamcancel.ErrInvalidOption, "WithPendingCancel(%v)", ttl)
		assert.ErrorContains(t, err, "WithPendingCancel", "WithPendingCancel(%v)", ttl)
		assert.ErrorContains(t, err, "must be 10ms to 1h", "WithPendingCancel(%v)", ttl)
	}
}
