package streamcancel_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// causeOf waits for the run to end and returns its cause as a
// *CancelError, failing the test when the cause is of another kind.
func causeOf(t *testing.T, chk *streamcancel.Checker) *streamcancel.CancelError {
	t.Helper()
	waitDone(t, chk, 2*time.Second)
	cause := context.Cause(chk.Context())
	var ce *streamcancel.CancelError
	require.True(t, errors.As(cause, &ce), "cause %v is not a *CancelError", cause)
	return ce
}

// A reason travels with the cancel, through the push and through the
// stored record, and the cause still matches ErrCanceled and
// context.Canceled.
func TestReasonReachesRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		res, err := b.Cancel(ctx, "chat-1", streamcancel.WithReason("user pressed Stop"))
		require.NoError(t, err)
		require.True(t, res.Found)

		ce := causeOf(t, chk)
		assert.Equal(t, "user pressed Stop", ce.Reason)
		assert.Empty(t, ce.TakenOverBy)
		assert.ErrorIs(t, chk.Err(), streamcancel.ErrCanceled)
		assert.ErrorIs(t, chk.Err(), context.Canceled)
		assert.NotErrorIs(t, chk.Err(), streamcancel.ErrTakenOver)
		assert.Contains(t, chk.Err().Error(), "user pressed Stop")
	})
}

// A run whose push is lost reads the reason from the stored record at its
// next poll, and a second cancel does not replace the first reason.
func TestReasonFromPoll(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		// node-a's channel is never the one node-x subscribes to, so only
		// the poll can deliver the cancel.
		a := e.readingRegistry(t, "node-a", streamcancel.WithPollInterval(20*time.Millisecond))
		c := e.client(t)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()
		require.NoError(t, c.HSet(ctx, e.runKey("chat-1"), "node", "node-x").Err())

		b := e.registry(t, "node-b")
		_, err = b.Cancel(ctx, "chat-1", streamcancel.WithReason("first"))
		require.NoError(t, err)
		_, err = b.Cancel(ctx, "chat-1", streamcancel.WithReason("second"))
		require.NoError(t, err)

		assert.Equal(t, "first", causeOf(t, chk).Reason)
	})
}

// A cancel without a reason gives a cause with an empty Reason, whose
// message is ErrCanceled's.
func TestCancelWithoutReason(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		_, err = b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		ce := causeOf(t, chk)
		assert.Empty(t, ce.Reason)
		assert.Equal(t, streamcancel.ErrCanceled.Error(), ce.Error())
	})
}

// Invalid reasons and group names get typed errors that name the value,
// and nothing is canceled.
func TestInvalidCallOptions(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		reasons := []struct {
			name, reason, want string
		}{
			{"empty", "", "empty"},
			{"too long", strings.Repeat("x", streamcancel.MaxReasonLen+1), "maximum is 256"},
			{"newline", "stop\nnow", "control character"},
			{"not UTF-8", "stop\xff", "not valid UTF-8"},
		}
		for _, tc := range reasons {
			_, err := a.Cancel(ctx, "chat-1", streamcancel.WithReason(tc.reason))
			assert.ErrorIs(t, err, streamcancel.ErrInvalidReason, "Cancel with reason %s", tc.name)
			assert.ErrorContains(t, err, tc.want, "Cancel with reason %s", tc.name)
			_, err = a.CancelAndWait(ctx, "chat-1", streamcancel.WithReason(tc.reason))
			assert.ErrorIs(t, err, streamcancel.ErrInvalidReason, "CancelAndWait with reason %s", tc.name)
			_, err = a.CancelGroup(ctx, "conv-1", streamcancel.WithReason(tc.reason))
			assert.ErrorIs(t, err, streamcancel.ErrInvalidReason, "CancelGroup with reason %s", tc.name)
		}
		_, err = a.Cancel(ctx, "chat-1", nil)
		assert.ErrorIs(t, err, streamcancel.ErrInvalidOption)

		for _, group := range []string{"", strings.Repeat("g", streamcancel.MaxGroupLen+1)} {
			_, err := a.Start(ctx, "chat-2", streamcancel.WithGroup(group))
			assert.ErrorIs(t, err, streamcancel.ErrInvalidGroup, "Start in group of %d bytes", len(group))
			_, err = a.CancelGroup(ctx, group)
			assert.ErrorIs(t, err, streamcancel.ErrInvalidGroup, "CancelGroup of %d bytes", len(group))
		}
		_, err = a.Start(ctx, "chat-2", nil)
		assert.ErrorIs(t, err, streamcancel.ErrInvalidOption)

		assert.NoError(t, chk.Err(), "run after rejected cancels")
		assert.Equal(t, 1, a.Stats().ActiveRuns, "runs after rejected starts")
	})
}

// A reason arrives byte for byte, through the push and through a stored
// pending cancel: the maximum length, spaces at either end, non-ASCII text and
// text that looks like another push message.
func TestReasonArrivesIntact(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b", streamcancel.WithPendingCancel(time.Second))
		waitSubscribed(t, a)

		reasons := []string{
			strings.Repeat("x", streamcancel.MaxReasonLen), " leading", "trailing ", "two  spaces",
			"ended 0123456789abcdef 5", "takeover x node-c", strings.Repeat("日", streamcancel.MaxReasonLen/3),
		}
		for i, reason := range reasons {
			id := fmt.Sprintf("chat-%d", i)
			chk, err := a.Start(ctx, id)
			require.NoError(t, err)
			_, err = b.Cancel(ctx, id, streamcancel.WithReason(reason))
			require.NoError(t, err, "reason %q", reason)
			assert.Equal(t, reason, causeOf(t, chk).Reason, "reason through the push")
			assert.ErrorIs(t, chk.Err(), streamcancel.ErrCanceled)
			require.NoError(t, chk.Close())

			res, err := b.Cancel(ctx, id, streamcancel.WithReason(reason))
			require.NoError(t, err)
			require.True(t, res.Pending, "cancel with no active run")
			next, err := a.Start(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, reason, causeOf(t, next).Reason, "reason through the pending cancel")
			require.NoError(t, next.Close())
		}
	})
}
