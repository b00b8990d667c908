package streamcancel_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// Cancelled reads local state only: it does not allocate, and it returns
// false while the run is active.
func TestCancelledDoesNotAllocate(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		allocs := testing.AllocsPerRun(10000, func() {
			if chk.Cancelled() {
				t.Fatal("Cancelled() of an active run")
			}
		})
		assert.Zero(t, allocs)
	})
}

// Err and the context's cause tell a cancel from any node apart from the
// parent's own end.
func TestCauseDistinguishesCancel(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")

		canceled, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer canceled.Close()
		assert.NoError(t, canceled.Err(), "Err() of an active run")

		deadlineCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		expired, err := a.Start(deadlineCtx, "chat-2")
		require.NoError(t, err)
		defer expired.Close()

		parentCtx, cancelParent := context.WithCancel(ctx)
		parentEnded, err := a.Start(parentCtx, "chat-3")
		require.NoError(t, err)
		defer parentEnded.Close()

		_, err = b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		cancelParent()

		waitDone(t, canceled, time.Second)
		waitDone(t, expired, time.Second)
		waitDone(t, parentEnded, time.Second)

		assert.ErrorIs(t, context.Cause(canceled.Context()), streamcancel.ErrCanceled)
		assert.ErrorIs(t, canceled.Err(), streamcancel.ErrCanceled)
		assert.ErrorIs(t, canceled.Context().Err(), context.Canceled)

		assert.ErrorIs(t, context.Cause(expired.Context()), context.DeadlineExceeded)
		assert.NotErrorIs(t, context.Cause(expired.Context()), streamcancel.ErrCanceled)
		assert.Equal(t, context.DeadlineExceeded, expired.Err())

		assert.Equal(t, context.Canceled, parentEnded.Err())
		assert.NotErrorIs(t, parentEnded.Err(), streamcancel.ErrCanceled)

		require.Eventually(t, expired.Cancelled, time.Second, time.Millisecond, "Cancelled() after the parent's deadline")
		require.Eventually(t, parentEnded.Cancelled, time.Second, time.Millisecond, "Cancelled() after the parent ended")
	})
}

// Start with a context that has already ended returns its error and
// registers nothing.
func TestStartWithEndedContext(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		done, cancel := context.WithCancel(ctx)
		cancel()

		chk, err := a.Start(done, "chat-1")
		require.ErrorIs(t, err, context.Canceled)
		assert.Nil(t, chk)
		assert.Empty(t, e.keys(t, e.client(t)))
	})
}

// A Redis error never looks like a cancel: with Redis down, runs stay
// active and Err stays nil.
func TestRedisErrorIsNotCancel(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: downAddr(t)})
	defer rdb.Close()
	a, err := streamcancel.NewRegistry(rdb, streamcancel.WithPollInterval(10*time.Millisecond), streamcancel.WithCheckEvery(1))
	require.NoError(t, err)
	defer a.Close()

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer chk.Close()

	sent := stream(chk, time.Millisecond, 200)
	assert.Equal(t, 200, sent, "chunks sent while Redis is down")
	assert.NoError(t, chk.Err())
	assert.NotErrorIs(t, context.Cause(chk.Context()), streamcancel.ErrCanceled)
	assert.Positive(t, a.Stats().SyncErrors)
}

// An SSE handler streams through a Checker. When the HTTP client goes away
// after 3 chunks, the loop ends within 100ms and the run's marker is gone.
func TestHandlerEndsWhenClientDisconnects(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		c := e.client(t)

		loopEnded := make(chan time.Time, 1)
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chk, err := a.Start(r.Context(), r.URL.Query().Get("stream"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusConflict)
				return
			}
			defer chk.Close()
			defer func() { loopEnded <- time.Now() }()

			w.Header().Set("Content-Type", "text/event-stream")
			for i := 0; ; i++ {
				if chk.Cancelled() {
					return
				}
				fmt.Fprintf(w, "data: token %d\n\n", i)
				w.(http.Flusher).Flush()
				select {
				case <-chk.Context().Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
		srv := httptest.NewServer(handler)
		defer srv.Close()

		reqCtx, disconnect := context.WithCancel(ctx)
		req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, srv.URL+"/?stream=chat-1", nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		buf := make([]byte, 0, 256)
		chunk := make([]byte, 64)
		for countEvents(buf) < 3 {
			n, err := resp.Body.Read(chunk)
			require.NoError(t, err)
			buf = append(buf, chunk[:n]...)
		}
		require.Len(t, e.keys(t, c), 1, "marker while streaming")

		start := time.Now()
		disconnect()
		_ = resp.Body.Close()

		select {
		case end := <-loopEnded:
			assert.Less(t, end.Sub(start), 100*time.Millisecond, "loop end after disconnect")
		case <-time.After(2 * time.Second):
			t.Fatal("handler loop still running 2s after the client disconnected")
		}
		require.Eventually(t, func() bool { return len(e.keys(t, c)) == 0 }, time.Second, 5*time.Millisecond, "marker after disconnect")
	})
}

func countEvents(b []byte) int {
	n := 0
	for i := 0; i+1 < len(b); i++ {
		if b[i] == '\n' && b[i+1] == '\n' {
			n++
		}
	}
	return n
}

var _ = errors.Is
