package streamcancel

import (
	"context"
	"time"
)

// A call is a Redis call running on a goroutine of the registry. go-redis
// does not stop a read that is in flight when its context ends unless the
// client sets ContextTimeoutEnabled, so waiting on a separate goroutine is
// what keeps a caller's wait bounded. The registry's wait group counts the
// goroutine, so Close can wait for it. A call that fails makes a cluster
// client reload its map of slots (refreshTopology).
type call[T any] struct {
	// done is closed when fn has returned and value and err are set.
	done   chan struct{}
	value  T
	err    error
	cancel context.CancelFunc
}

// startCall runs fn on a goroutine of r with a context derived from ctx.
// It returns ErrClosed without running fn after Close.
func startCall[T any](r *Registry, ctx context.Context, fn func(context.Context) (T, error)) (*call[T], error) {
	r.mu.RLock()
	defer r.mu.RUnlock()

	if r.closed {
		return nil, ErrClosed
	}
	return spawnCallLocked(r, ctx, fn), nil
}

// spawnCallLocked is startCall for a caller that holds r.mu and has
// checked that r is not closed.
func spawnCallLocked[T any](r *Registry, ctx context.Context, fn func(context.Context) (T, error)) *call[T] {
	ctx, cancel := context.WithCancel(ctx)
	c := &call[T]{done: make(chan struct{}), cancel: cancel}

	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(c.done)
		c.value, c.err = fn(ctx)
		refreshTopology(r.rdb, c.err)
	}()
	return c
}

// wait waits for the call at most timeout, or until ctx ends, and then
// ends the call's context. It returns context.DeadlineExceeded when the
// timeout passes first and ctx's error when ctx ends first.
func (c *call[T]) wait(ctx context.Context, timeout time.Duration) (T, error) {
	defer c.cancel()

	timer := time.NewTimer(timeout)
	defer timer.Stop()

	var zero T
	select {
	case <-c.done:
		return c.value, c.err
	case <-timer.C:
		return zero, context.DeadlineExceeded
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// bounded runs fn as a call and waits for it at most timeout, or until
// ctx ends. It returns ErrClosed without running fn after Close.
func bounded[T any](r *Registry, ctx context.Context, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	c, err := startCall(r, ctx, fn)
	if err != nil {
		var zero T
		return zero, err
	}
	return c.wait(ctx, timeout)
}

// retry calls fn until it returns an error for which retryable is false,
// or nil, or ctx ends, and returns the last result. The wait between two
// calls starts at minDelay and doubles up to maxDelay.
func retry[T any](ctx context.Context, retryable func(error) bool, minDelay, maxDelay time.Duration, fn func() (T, error)) (T, error) {
	delay := minDelay
	for {
		v, err := fn()
		if err == nil || !retryable(err) {
			return v, err
		}

		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return v, err
		case <-timer.C:
		}
		delay = min(2*delay, maxDelay)
	}
}
