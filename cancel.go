package streamcancel

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// A Checker belongs to one run of a stream, started by Registry.Start.
// The streaming loop calls Cancelled for each chunk, or watches Context,
// and calls Close when the run ends.
//
// All methods are safe for concurrent use. None of them waits on Redis
// except Close, which waits at most 500ms.
type Checker struct {
	reg      *Registry
	streamID string
	key      string
	token    string
	every    uint64

	// group is the group the run joined, or empty.
	group string

	// takeover is true while a run started with WithTakeover has not been
	// registered yet. Its registration replaces an active run of the
	// stream; later registrations, after a lost marker, do not.
	takeover atomic.Bool

	// replaces is the local run that this run takes over, until Start
	// cancels it or drops this run and hands it on. The registry's mu
	// guards it.
	replaces *Checker

	// canceledAt is when a cancel or takeover reached the run, and
	// closedAt when Close was called, in Unix nanoseconds, or 0.
	canceledAt atomic.Int64
	closedAt   atomic.Int64

	ctx    context.Context
	cancel context.CancelCauseFunc

	// done is set once ctx ends, so Cancelled is a single atomic load.
	done atomic.Bool

	// calls counts Cancelled calls since the last poll request.
	calls atomic.Uint64

	// registered is true while the run's marker is known to be in Redis.
	registered atomic.Bool

	// coveredEpoch is the subscription epoch since which every cancel of
	// the run has been pushed to it or found by a read of its record, or
	// 0. A probe on another subscription proves nothing for the run.
	coveredEpoch atomic.Uint64

	// starting is true until Start has its own registration's result, so
	// that background passes leave the run alone until then.
	starting atomic.Bool

	// startDone is closed when Start's registration call has returned. A
	// Start that fails open returns before that, and the call may still
	// write the marker. It is nil when Start returned after the call.
	startDone <-chan struct{}

	// stopMirror stops copying the parent context's end into done.
	stopMirror func() bool

	// polling is true while a poll of this run is queued or in flight.
	polling atomic.Bool

	// lastPoll is the time of the last poll request taken by the
	// background loop, in Unix nanoseconds.
	lastPoll atomic.Int64

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

func newChecker(parent context.Context, reg *Registry, streamID string, cfg startConfig) *Checker {
	ctx, cancel := context.WithCancelCause(parent)
	prefix := reg.cfg.keyPrefix
	c := &Checker{
		reg:      reg,
		streamID: streamID,
		key:      runKey(prefix, streamID),
		token:    randomHex(tokenLen / 2),
		every:    uint64(reg.cfg.checkEvery),
		group:    cfg.group,
		ctx:      ctx,
		cancel:   cancel,
	}
	c.starting.Store(true)
	c.takeover.Store(cfg.takeover)

	// The parent may end at any time; mirror that into the flag that
	// Cancelled reads. The run's own cancels set the flag themselves, so
	// only the parent is watched. Watching it rather than ctx gives ctx no
	// map of children, and a parent that never ends, such as
	// context.Background(), needs no watcher. That saves about half a
	// kilobyte of heap per run, as BenchmarkScaleOneRegistry measures.
	// AfterFunc runs at once if the parent is already done.
	c.stopMirror = stopNothing
	if parent.Done() != nil {
		c.stopMirror = context.AfterFunc(parent, func() { c.done.Store(true) })
	}
	return c
}

// syncKeys returns the KEYS of sync.lua for c. The keys other than the
// marker's are built for each call rather than kept, because a run keeps
// them for its whole life and a poll pass needs them only for a moment.
func (c *Checker) syncKeys() []string {
	prefix := c.reg.cfg.keyPrefix
	return []string{c.key, streamKey(prefix, c.streamID, "pending"), streamKey(prefix, c.streamID, "over")}
}

// releaseKeys returns the KEYS of release.lua for c.
func (c *Checker) releaseKeys() []string {
	prefix := c.reg.cfg.keyPrefix
	return []string{c.key, streamKey(prefix, c.streamID, "wait"), streamKey(prefix, c.streamID, "ended"), streamKey(prefix, c.streamID, "over")}
}

// stopNothing is the stopMirror of a run whose parent never ends.
func stopNothing() bool { return false }

// Cancelled reports whether the run has ended: canceled from any node,
// ended by the parent context, or closed. It is the per-chunk call: it
// reads local state only, never waits on Redis and never allocates.
// After the parent context ends, Cancelled may return false for up to
// CheckEvery more calls; Context and Err show it at once.
//
// While the Pub/Sub push path is down, every CheckEvery-th call also asks
// the registry to poll this run's cancel record in the background.
func (c *Checker) Cancelled() bool {
	if c.done.Load() {
		return true
	}

	if c.calls.Add(1) >= c.every {
		c.calls.Store(0)

		// The flag follows the context on another goroutine, so a parent
		// that just ended may not show in it yet.
		if c.ctx.Err() != nil {
			return true
		}
		c.reg.requestPoll(c)
	}
	return false
}

// Context returns the run's context. It is derived from the context given
// to Start and is done when the run is canceled from any node, when that
// parent ends, or when the Checker is closed. After a cancel or a
// takeover, context.Cause of it is a *CancelError that matches
// ErrCanceled.
func (c *Checker) Context() context.Context {
	return c.ctx
}

// Err returns nil while the run is active. After a cancel from any node or
// a takeover it returns the *CancelError cause, which matches both
// ErrCanceled and context.Canceled and carries the reason. When the
// parent context ended first it returns the parent's error, such as
// context.DeadlineExceeded. After Close without an earlier cancel it
// returns context.Canceled.
func (c *Checker) Err() error {
	err := c.ctx.Err()
	if err == nil {
		return nil
	}

	if cause := context.Cause(c.ctx); errors.Is(cause, ErrCanceled) {
		return cause
	}
	return err
}

// StreamID returns the ID of the stream this run belongs to.
func (c *Checker) StreamID() string {
	return c.streamID
}

// Close ends the run and removes its marker from Redis, comparing the
// run's token so that a newer run of the same stream is never touched.
// CancelAndWait calls waiting for the run, on any node, return then. It
// also removes the run from its group. It is idempotent and safe to defer.
//
// Close waits at most 500ms for Redis. It returns an error when the marker
// could not be removed. The run has ended locally either way. The
// registry then keeps trying in the background, as through a failover,
// so that CancelAndWait calls learn of the run's end, and otherwise the
// marker expires after the registry's TTL. Later calls return the
// same error. After Registry.Close has begun, Close only ends the run
// locally and returns nil, because Registry.Close removes the markers and
// reports whether that failed.
func (c *Checker) Close() error {
	c.closeOnce.Do(func() {
		c.closedAt.Store(time.Now().UnixNano())
		c.closed.Store(true)
		c.done.Store(true)
		c.cancel(nil)
		c.stopMirror()
		c.closeErr = c.reg.release(c)
	})
	return c.closeErr
}

// cancelRemote ends the run because of a cancel from any node or a
// takeover. The first cause stays.
func (c *Checker) cancelRemote(cause *CancelError) {
	c.canceledAt.CompareAndSwap(0, time.Now().UnixNano())
	c.done.Store(true)
	c.cancel(cause)
}

// stopDuration returns how long the run took from the arrival of its
// cancel until Close, or until now before Close. It is 0 when no cancel
// arrived.
func (c *Checker) stopDuration() time.Duration {
	canceled := c.canceledAt.Load()
	if canceled == 0 {
		return 0
	}
	end := c.closedAt.Load()
	if end == 0 {
		end = time.Now().UnixNano()
	}
	return time.Duration(max(end-canceled, 0))
}

// takePoll reports whether a poll of this run may go to Redis now: at
// most one per gap, so a run whose push path is down does not send a
// poll every few chunks.
func (c *Checker) takePoll(now time.Time, gap time.Duration) bool {
	last := c.lastPoll.Load()
	if now.UnixNano()-last < int64(gap) {
		return false
	}
	return c.lastPoll.CompareAndSwap(last, now.UnixNano())
}
