package streamcancel

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// pollQueueSize is the capacity of the queue of per-run poll requests. A
// request that finds it full is dropped; the periodic poll still covers
// the run.
const pollQueueSize = 1024

// A Registry tracks the runs of streams on this node and cancels runs on
// any node that shares its Redis and key prefix.
//
// Start begins a run and returns its Checker; Cancel stops the active run
// of a stream wherever it runs; Close stops the registry. CancelAndWait
// also waits until the run has ended, and CancelGroup stops every run that
// joined a group through WithGroup. A Registry is safe for concurrent use.
// Create one per process and share it.
//
// In the background a registry runs two goroutines. A subscriber receives
// cancels pushed over Pub/Sub and checks that its connection is alive. A
// loop re-reads the cancel records of all local runs every PollInterval
// and extends their leases every TTL/3, each in one pipelined round trip.
// On a *redis.Client the loop reads the records only when a probe message
// that it publishes to its own channel fails to prove that every push has
// arrived.
type Registry struct {
	rdb redis.UniversalClient
	cfg config

	// channel is this node's cancel channel.
	channel string

	// ctx ends when Close is called; it stops the background goroutines.
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu       sync.RWMutex
	closed   bool
	byToken  map[string]*Checker
	byStream map[string]*Checker

	// releasing holds runs that Start dropped while their marker may
	// still land in Redis. A goroutine deletes the marker once the call
	// that may write it has returned, and Close deletes it if it has not.
	releasing map[*Checker]struct{}

	// closeDone is closed when the first Close has finished, and closeErr
	// is its result.
	closeDone chan struct{}
	closeErr  error

	// waiters holds, by run token, the channels of CancelAndWait calls
	// on this registry that wait for that run's end.
	waiters map[string][]chan time.Duration

	pollQueue chan *Checker
	resync    chan struct{}

	// pushReady is true while the subscriber is known to be subscribed
	// and its connection replied recently.
	pushReady atomic.Bool

	// pushEpoch counts the subscriptions Redis confirmed, so that a probe
	// can tell whether the subscription changed under it.
	pushEpoch atomic.Uint64

	// probes is true when a probe proves that earlier pushes arrived
	// (see probe). probeID distinguishes this registry's probe messages
	// from those of other registries with the same node ID. probeAcks
	// carries the sequence numbers of probe messages to the background
	// loop. probing is true while a probe's PUBLISH is in flight.
	// probeSeq belongs to the background loop.
	probes    bool
	probeID   string
	probeAcks chan uint64
	probing   atomic.Bool
	probeSeq  uint64

	psMu sync.Mutex
	ps   *redis.PubSub

	stats  counters
	errLog errorLog
}

// CancelResult describes what Cancel did.
type CancelResult struct {
	// Found is true when a run of the stream was active and its cancel
	// is now recorded in Redis. The run stops within one PollInterval
	// even if the push is lost.
	Found bool

	// NodeID is the node that runs the canceled run, when Found is true.
	NodeID string

	// Pushed is true when Redis delivered the Pub/Sub push to at least
	// one subscriber of that node's channel connected to the server that
	// ran the cancel. On one Redis or a Sentinel-managed primary those are
	// all its subscribers. On Redis Cluster the push also reaches the other
	// nodes over the cluster bus, and those deliveries are not counted, so
	// there Pushed is often false although the run got the push. Either
	// way false does not mean the cancel is lost, because the stored record
	// still stops the run.
	Pushed bool

	// Pending is true when no run was active and a pending cancel is now
	// stored for the next Start of the stream (see WithPendingCancel).
	Pending bool

	// StopDuration is set by CancelAndWait: how long the run took to end,
	// from the moment its cancel reached its node until its Checker was
	// closed. It is 0 when the run ended before the cancel reached it.
	StopDuration time.Duration
}

// NewRegistry returns a Registry that uses rdb: a *redis.Client, the client
// of redis.NewFailoverClient for a Sentinel-managed primary, or a
// *redis.ClusterClient for Redis Cluster. All registries that share
// streams must use the same Redis deployment and key prefix.
// It fails only on a nil client, a nil Option or an option value out of
// range, with an error matching ErrInvalidOption. It does not contact
// Redis, so it succeeds while Redis is unreachable and connects when it can.
//
// The caller keeps ownership of rdb and closes it after Registry.Close.
func NewRegistry(rdb redis.UniversalClient, opts ...Option) (*Registry, error) {
	if rdb == nil || isNilPointer(rdb) {
		return nil, fmt.Errorf("%w: the Redis client is nil; pass a go-redis client such as the one redis.NewClient returns", ErrInvalidOption)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}

	ctx, stop := context.WithCancel(context.Background())
	r := &Registry{
		rdb:       rdb,
		cfg:       cfg,
		channel:   nodeChannelPrefix(cfg.keyPrefix) + cfg.nodeID,
		ctx:       ctx,
		stop:      stop,
		byToken:   make(map[string]*Checker),
		byStream:  make(map[string]*Checker),
		releasing: make(map[*Checker]struct{}),
		waiters:   make(map[string][]chan time.Duration),
		closeDone: make(chan struct{}),
		pollQueue: make(chan *Checker, pollQueueSize),
		resync:    make(chan struct{}, 1),
		probes:    probesProve(rdb),
		probeID:   randomHex(8),
		probeAcks: make(chan uint64, 1),
		errLog:    errorLog{logger: cfg.logger, interval: errorLogInterval},
	}

	r.wg.Add(2)
	go r.subscribe()
	go r.maintain()
	return r, nil
}

// NodeID returns the node ID this registry stores with its runs.
func (r *Registry) NodeID() string {
	return r.cfg.nodeID
}

// Start begins a run of streamID on this node and returns its Checker.
// The caller must call Checker.Close when the run ends.
//
// Start registers the run in Redis, waiting at most 500ms. It returns an
// error matching ErrAlreadyActive when a run of streamID is active on any
// node, unless WithTakeover is given, ErrInvalidStreamID for an invalid
// ID, ErrInvalidGroup for an invalid WithGroup, ErrInvalidOption for a nil
// option and ErrClosed after Close. When ctx ends before Start returns,
// Start returns ctx's error, and a marker that its Redis call writes later
// is deleted.
//
// When a pending cancel of streamID is stored (see WithPendingCancel),
// Start consumes it and returns a Checker that is already canceled: its
// first Cancelled call returns true. With WithGroup, Start also adds the
// run to the group before it returns. If that fails, the next lease
// refresh adds it.
//
// When Redis fails or does not reply within 500ms, Start fails open: it
// logs the error and returns a working Checker, and the registry registers
// the run in the background once Redis replies. Until then a Cancel from
// another node cannot find the run, and a Start of the same stream on
// another node succeeds.
//
// Start is safe for concurrent use.
func (r *Registry) Start(ctx context.Context, streamID string, opts ...StartOption) (*Checker, error) {
	if err := validateStreamID(streamID); err != nil {
		return nil, err
	}
	cfg, err := newStartConfig(opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("streamcancel: start %q: %w", streamID, err)
	}

	c := newChecker(ctx, r, streamID, cfg)
	if err := r.add(c); err != nil {
		c.closed.Store(true)
		c.cancel(nil)
		c.stopMirror()
		return nil, err
	}

	// A cancel recorded after the registration below is pushed on this
	// subscription. Should it change before Start returns, the full read
	// of the new one skips the run, and the next PollInterval reads it.
	c.coveredEpoch.Store(r.readyEpoch())

	call, err := startCall(r, ctx, func(ctx context.Context) (startReply, error) {
		return r.register(ctx, c)
	})
	if err != nil {
		r.drop(c, nil)
		return nil, fmt.Errorf("%w: start %q: create a new Registry to start runs", err, streamID)
	}
	c.startDone = call.done
	reply, err := call.wait(ctx, startTimeout)
	c.starting.Store(false)

	switch {
	case ctx.Err() != nil:
		r.drop(c, call.done)
		return nil, fmt.Errorf("streamcancel: start %q: %w", streamID, ctx.Err())
	case errors.Is(err, context.DeadlineExceeded):
		r.reportError(kindStart, streamID, fmt.Errorf("Redis did not reply within %v; the run stays unregistered until a background pass registers it: %w", startTimeout, err))
		r.replaceLocal(c)
		return c, nil
	case err != nil:
		r.reportError(kindStart, streamID, fmt.Errorf("the run stays unregistered until a background pass registers it: %w", err))
		r.replaceLocal(c)
		return c, nil
	case reply.state == stateOther:
		r.drop(c, nil)
		return nil, fmt.Errorf("%w: stream %q runs on node %q; start again once that run's Checker is closed, after canceling it if needed, or start with WithTakeover", ErrAlreadyActive, streamID, reply.node)
	}

	// The call has returned, so Close need not wait for it, and the run
	// does not keep its channel.
	c.startDone = nil
	c.registered.Store(true)
	c.takeover.Store(false)
	r.replaceLocal(c)
	if reply.joinErr != nil {
		r.reportError(kindStart, streamID, fmt.Errorf("adding the run to its group failed; the next lease refresh adds it: %w", reply.joinErr))
	}
	if reply.canceled {
		c.cancelRemote(&CancelError{Reason: reply.reason})
	}
	return c, nil
}

// replaceLocal cancels the local run that c took over, if any, without
// waiting for the push that the takeover sends to this node.
func (r *Registry) replaceLocal(c *Checker) {
	r.mu.Lock()
	replaced := c.replaces
	c.replaces = nil
	r.mu.Unlock()

	if replaced != nil {
		replaced.cancelRemote(&CancelError{TakenOverBy: r.cfg.nodeID})
	}
}

// startReply is the result of Start's Redis call.
type startReply struct {
	syncReply

	// joinErr is the error of adding the run to its group, if that failed.
	joinErr error
}

// register registers c in Redis, replacing an active run if c takes over,
// and adds a new marker's run to its group.
func (r *Registry) register(ctx context.Context, c *Checker) (startReply, error) {
	reply, err := r.runSync(ctx, c, c.registerMode())
	if err != nil || reply.state != stateRegistered || c.group == "" {
		return startReply{syncReply: reply}, err
	}
	return startReply{syncReply: reply, joinErr: r.joinGroup(ctx, c)}, nil
}

// Cancel stops the active run of streamID on whatever node it runs. It
// records the cancel in Redis and pushes it to the run's node in one
// atomic script, and returns once Redis has replied. It does not wait
// for the run to stop.
//
// When no run is active, Cancel returns Found false and leaves nothing
// behind, so a later run of the same ID is not affected, unless the
// registry has WithPendingCancel. A cancel affects only the run that was
// active when Cancel was called. WithReason attaches a reason that the run
// reads from its cause.
//
// Cancel returns an error, never Found true, when Redis fails or ctx ends
// first; the cancel may or may not have been recorded then. With a ctx
// that has already ended it sends nothing and returns ctx's error. On Redis
// Cluster, while a resharding migrates the stream's slot, Cancel waits
// for the migration to end. When ctx has no deadline, Cancel gives up
// after 5s. It returns ErrInvalidStreamID for an invalid ID,
// ErrInvalidReason for an invalid reason and ErrClosed after Close. It is
// safe for concurrent use.
func (r *Registry) Cancel(ctx context.Context, streamID string, opts ...CancelOption) (CancelResult, error) {
	if err := validateStreamID(streamID); err != nil {
		return CancelResult{}, err
	}
	cfg, err := newCancelConfig(opts)
	if err != nil {
		return CancelResult{}, err
	}

	res, _, err := r.cancel(ctx, streamID, cfg, cancelTimeout, 0)
	return res, err
}

// cancel runs cancel.lua for the active run of streamID and cancels the
// run at once when it is local. When wait is positive, it also records
// this node as waiting for the run's end for that long. It returns the
// canceled run's token.
func (r *Registry) cancel(ctx context.Context, streamID string, cfg cancelConfig, capTimeout, wait time.Duration) (CancelResult, string, error) {
	if err := ctx.Err(); err != nil {
		return CancelResult{}, "", fmt.Errorf("streamcancel: cancel %q: nothing was sent, because the context had ended: %w", streamID, err)
	}

	timeout := capTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
	}
	waiter := ""
	if wait > 0 {
		waiter = r.cfg.nodeID
	}

	call := newCancelCall(r.cfg.keyPrefix, timeout)
	reply, err := bounded(r, ctx, timeout, func(ctx context.Context) (cancelReply, error) {
		v, err := untilStable(ctx, func() (interface{}, error) {
			return cancelScript.Run(ctx, r.rdb, cancelKeys(r.cfg.keyPrefix, streamID), call.args(cfg.reason, "", waiter, wait, r.cfg.pendingTTL)...).Result()
		})
		if err != nil {
			return cancelReply{}, err
		}
		return parseCancelReply(v)
	})
	if errors.Is(err, ErrClosed) {
		return CancelResult{}, "", fmt.Errorf("%w: cancel %q: use a registry that is not closed", err, streamID)
	}
	if err != nil {
		r.stats.cancelErrors.Add(1)
		return CancelResult{}, "", fmt.Errorf("streamcancel: cancel %q: the cancel may or may not be recorded, retry it: %w", streamID, err)
	}

	// A run on this registry stops at once, without the Pub/Sub round trip.
	if reply.found {
		r.deliver(reply.token, &CancelError{Reason: cfg.reason})
	}
	res := CancelResult{Found: reply.found, NodeID: reply.node, Pushed: reply.receivers > 0, Pending: reply.pending}
	return res, reply.token, nil
}

// Close stops the registry's background goroutines and removes the markers
// of its runs from Redis, so that Cancel from other nodes reports them as
// not found. Checkers of a closed registry keep working locally: their
// loops are not canceled, and Checker.Close stays safe to call.
//
// Close returns within about one second even while Redis is down or slow.
// It returns an error when it could not remove the markers, which then
// expire after the TTL, or when a Redis call was still in flight at that
// point. That call's goroutine ends when the call returns, which the
// client's ReadTimeout bounds.
// Later calls of Start and Cancel return ErrClosed. Close is idempotent;
// concurrent and later calls wait for the first and return its result.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.closeDone
		return r.closeErr
	}
	r.closed = true
	r.mu.Unlock()

	r.stop()

	// PubSub.Close waits for a dial in flight on the subscription, so it
	// runs on its own goroutine and counts as a call in flight.
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.closePubSub()
	}()

	// Calls in flight may still write markers, so they finish before the
	// markers are listed and deleted.
	var errs []error
	if !waitTimeout(&r.wg, closeDrainTimeout) {
		errs = append(errs, errors.New("streamcancel: close: a Redis call is still in flight; its goroutine ends when the call returns, and a marker it writes expires after the TTL"))
	}

	r.mu.RLock()
	runs := r.snapshotLocked()
	for c := range r.releasing {
		runs = append(runs, c)
	}
	r.mu.RUnlock()

	released := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeReleaseTimeout)
		defer cancel()
		released <- r.releaseAll(ctx, runs, releaseDetach)
	}()
	timer := time.NewTimer(closeReleaseTimeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-released:
	case <-timer.C:
		err = context.DeadlineExceeded
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("streamcancel: close: removing the markers of %d runs failed, they expire after the TTL: %w", len(runs), err))
	}

	r.closeErr = errors.Join(errs...)
	close(r.closeDone)
	return r.closeErr
}

// add stores c as a local run. It fails when the registry is closed or,
// unless c takes over, when a local run of the same stream is active. The
// local run that c takes over, if any, goes to c.replaces; it stays in the
// registry until its Checker is closed.
func (r *Registry) add(c *Checker) error {
	r.mu.Lock()
	defer r.mu.Unlock()

	if r.closed {
		return fmt.Errorf("%w: start %q: create a new Registry to start runs", ErrClosed, c.streamID)
	}
	if old, ok := r.byStream[c.streamID]; ok {
		if !c.takeover.Load() {
			return fmt.Errorf("%w: stream %q runs on this node (%q); start again once that run's Checker is closed, after canceling it if needed, or start with WithTakeover", ErrAlreadyActive, c.streamID, r.cfg.nodeID)
		}
		c.replaces = old
	}
	r.byStream[c.streamID] = c
	r.byToken[c.token] = c
	return nil
}

// drop ends a run that Start does not return, and gives the stream back
// to the local run it was to replace. When callDone is not nil, a Redis
// call that may still write the run's marker is in flight, so the marker
// is deleted once that call has returned.
func (r *Registry) drop(c *Checker, callDone <-chan struct{}) {
	c.closed.Store(true)
	c.cancel(nil)
	c.stopMirror()

	r.mu.Lock()
	defer r.mu.Unlock()
	r.handBackLocked(c)
	r.removeLocked(c)
	if callDone == nil {
		return
	}

	r.releaseAfterLocked(c, callDone)
}

// handBackLocked gives the stream of c, a run that Start drops, back to
// the local run that c was to replace. When a newer Start took over c
// meanwhile, the run c was to replace goes to that Start instead, or is
// canceled at once when that Start has already returned. r.mu must be
// held.
func (r *Registry) handBackLocked(c *Checker) {
	replaced := c.replaces
	c.replaces = nil

	// A run that Start dropped meanwhile has left byToken. One being
	// dropped right now is still there and hands the stream on in turn.
	if replaced != nil && r.byToken[replaced.token] != replaced {
		replaced = nil
	}

	holder := r.byStream[c.streamID]
	if holder == c {
		if replaced != nil {
			r.byStream[c.streamID] = replaced
		} else {
			delete(r.byStream, c.streamID)
		}
		return
	}
	for newer := holder; newer != nil; newer = newer.replaces {
		if newer.replaces == c {
			newer.replaces = replaced
			return
		}
	}
	if replaced != nil {
		replaced.cancelRemote(&CancelError{TakenOverBy: r.cfg.nodeID})
	}
}

// releaseAfterLocked deletes c's marker once callDone is closed, because
// the call behind it may still write the marker, and tries again while
// Redis fails. Until then c is in r.releasing, where Close finds it. r.mu
// must be held.
func (r *Registry) releaseAfterLocked(c *Checker, callDone <-chan struct{}) {
	r.releasing[c] = struct{}{}
	if r.closed {
		// Close deletes the markers of the runs in r.releasing.
		return
	}

	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		<-callDone

		err := r.releaseRetrying(c)
		if err != nil && r.ctx.Err() != nil {
			// Close deletes the markers of the runs in r.releasing.
			return
		}
		if err != nil {
			r.reportError(kindRelease, c.streamID, err)
		}

		r.mu.Lock()
		delete(r.releasing, c)
		r.mu.Unlock()
	}()
}

// releaseRetrying runs release.lua for an ended run until it succeeds,
// as when a failover ends, or until Close begins. Besides the marker, the
// call tells the CancelAndWait calls that wait for the run that it ended,
// and nothing else does. So it keeps trying for the TTL, after which the
// marker is gone, or for as long as a CancelAndWait without a deadline
// waits, whichever is longer.
func (r *Registry) releaseRetrying(c *Checker) error {
	ctx, cancel := context.WithTimeout(r.ctx, max(r.cfg.ttl, cancelWaitTimeout))
	defer cancel()

	_, err := retry(ctx, func(error) bool { return true }, minReleaseRetryDelay, maxReleaseRetryDelay, func() (struct{}, error) {
		err := r.releaseRun(ctx, c, releaseEnd)
		refreshTopology(r.rdb, err)
		return struct{}{}, err
	})
	return err
}

func (r *Registry) removeLocked(c *Checker) {
	if r.byStream[c.streamID] == c {
		delete(r.byStream, c.streamID)
	}
	delete(r.byToken, c.token)
}

// snapshot returns the local runs that background passes cover: those not
// closed and not still waiting for Start's own registration.
func (r *Registry) snapshot() []*Checker {
	r.mu.RLock()
	defer r.mu.RUnlock()

	runs := make([]*Checker, 0, len(r.byToken))
	for _, c := range r.byToken {
		if !c.starting.Load() && !c.closed.Load() {
			runs = append(runs, c)
		}
	}
	return runs
}

// snapshotLocked returns all local runs. r.mu must be held.
func (r *Registry) snapshotLocked() []*Checker {
	runs := make([]*Checker, 0, len(r.byToken))
	for _, c := range r.byToken {
		runs = append(runs, c)
	}
	return runs
}

// deliver cancels the local run with the given token, if there is one.
// Tokens of other nodes' runs are ignored.
func (r *Registry) deliver(token string, cause *CancelError) {
	r.mu.RLock()
	c := r.byToken[token]
	r.mu.RUnlock()

	if c != nil {
		c.cancelRemote(cause)
	}
}

// release removes c from the registry and deletes its marker in Redis.
// After Registry.Close it leaves c in place, because Close deletes the
// markers of all runs it finds, or already has.
func (r *Registry) release(c *Checker) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.removeLocked(c)
	r.notifyEndedLocked(c.token, c.stopDuration())
	if c.startDone != nil && !isClosed(c.startDone) {
		// Start failed open and its registration may still land.
		r.releaseAfterLocked(c, c.startDone)
	}
	call := spawnCallLocked(r, context.Background(), func(ctx context.Context) (struct{}, error) {
		if err := r.releaseRun(ctx, c, releaseEnd); err != nil {
			return struct{}{}, err
		}
		if c.group != "" {
			// The member expires with its lease if this fails.
			_ = r.leaveGroup(ctx, c)
		}
		return struct{}{}, nil
	})
	r.mu.Unlock()

	if _, err := call.wait(context.Background(), releaseTimeout); err != nil {
		r.reportError(kindRelease, c.streamID, err)
		r.mu.Lock()
		if _, ok := r.releasing[c]; !ok && !r.closed {
			r.releaseAfterLocked(c, call.done)
		}
		r.mu.Unlock()
		return fmt.Errorf("streamcancel: close run of %q: removing its marker failed; the registry tries again in the background, else it expires after the TTL: %w", c.streamID, err)
	}
	return nil
}

// releaseRun runs release.lua for c outside a pipeline.
func (r *Registry) releaseRun(ctx context.Context, c *Checker, mode string) error {
	return releaseScript.Run(ctx, r.rdb, c.releaseKeys(), r.releaseArgs(c, mode)...).Err()
}

func (r *Registry) releaseArgs(c *Checker, mode string) []interface{} {
	return []interface{}{c.token, mode, c.stopDuration().Microseconds(), nodeChannelPrefix(r.cfg.keyPrefix), endedTTL.Milliseconds()}
}

// releaseAll deletes the markers of runs in one pipeline and returns the
// first error. Mode releaseEnd also stores the ended records of runs that
// nodes wait for and notifies those nodes. Mode releaseDetach only deletes.
func (r *Registry) releaseAll(ctx context.Context, runs []*Checker, mode string) error {
	if len(runs) == 0 {
		return nil
	}
	calls := make([]scriptCall, len(runs))
	for i, c := range runs {
		calls[i] = scriptCall{keys: c.releaseKeys(), args: r.releaseArgs(c, mode)}
	}
	var err error
	for _, cmd := range r.pipelineScript(ctx, releaseScript, calls) {
		if err = cmd.Err(); err != nil {
			break
		}
	}
	if err != nil {
		r.reportError(kindRelease, runs[0].streamID, err)
	}
	return err
}

// isNilPointer reports whether v holds a nil pointer, such as a nil
// *redis.Client passed as a redis.UniversalClient.
func isNilPointer(v interface{}) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Ptr && rv.IsNil()
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitTimeout waits for wg at most d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}
