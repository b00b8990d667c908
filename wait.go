package streamcancel

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// CancelAndWait cancels the active run of streamID like Cancel, then
// waits until the run has ended, which is when its Checker was closed on
// whatever node it runs. It returns the result with StopDuration set.
//
// The run's node pushes the end to this node over Pub/Sub and also stores
// it in Redis for a minute, or until the longest wait for the run ends if
// that is later. While no push arrives, CancelAndWait reads that
// record once every PollInterval. A stream with no active run
// returns Found false, or Pending true under WithPendingCancel, at once.
//
// When ctx ends before the run does, CancelAndWait returns an error that
// matches ctx's error, together with the result of the cancel, which is
// recorded. It never reports success for a run that is still going: a run
// whose node died or lost Redis, or a registry closed before its loops
// ended, is not confirmed, and the call waits until ctx ends. When ctx has
// no deadline, CancelAndWait gives up after 30s. It returns the errors of
// Cancel, and ErrClosed when the registry closes while it waits. It is
// safe for concurrent use.
func (r *Registry) CancelAndWait(ctx context.Context, streamID string, opts ...CancelOption) (CancelResult, error) {
	if err := validateStreamID(streamID); err != nil {
		return CancelResult{}, err
	}
	cfg, err := newCancelConfig(opts)
	if err != nil {
		return CancelResult{}, err
	}

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cancelWaitTimeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()

	// The wait record outlives the wait, so the run's node notifies this
	// node whenever the run ends while the call waits.
	res, token, err := r.cancel(ctx, streamID, cfg, cancelWaitTimeout, time.Until(deadline)+time.Second)
	if err != nil || !res.Found {
		return res, err
	}

	ended := r.addWaiter(token)
	defer r.removeWaiter(token, ended)

	ticker := time.NewTicker(r.cfg.pollInterval)
	defer ticker.Stop()
	for {
		// The first read finds a run that ended before this call began
		// to listen for pushes.
		d, ok := r.readEnded(ctx, streamID, token)
		if ok {
			res.StopDuration = d
			return res, nil
		}

		select {
		case d := <-ended:
			res.StopDuration = d
			return res, nil
		case <-ticker.C:
		case <-r.ctx.Done():
			return res, fmt.Errorf("%w: cancel %q and wait: the cancel is recorded, but the registry closed before the run ended", ErrClosed, streamID)
		case <-ctx.Done():
			return res, fmt.Errorf("streamcancel: cancel %q and wait: the cancel is recorded, but the run on node %q has not ended: %w", streamID, res.NodeID, ctx.Err())
		}
	}
}

// readEnded reads the ended record of the run with the given token. It
// reports false when there is none or Redis fails; the caller tries again
// at the next tick. A push that arrives meanwhile waits in the buffered
// channel of addWaiter.
func (r *Registry) readEnded(ctx context.Context, streamID, token string) (time.Duration, bool) {
	v, err := bounded(r, ctx, max(r.cfg.pollInterval, time.Second), func(ctx context.Context) (string, error) {
		return r.rdb.HGet(ctx, streamKey(r.cfg.keyPrefix, streamID, "ended"), token).Result()
	})
	if err != nil {
		// redis.Nil: the run has not ended yet.
		return 0, false
	}
	us, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(us) * time.Microsecond, true
}

// addWaiter returns a channel that receives the stop duration of the run
// with the given token when that run ends.
func (r *Registry) addWaiter(token string) chan time.Duration {
	ch := make(chan time.Duration, 1)
	r.mu.Lock()
	r.waiters[token] = append(r.waiters[token], ch)
	r.mu.Unlock()
	return ch
}

func (r *Registry) removeWaiter(token string, ch chan time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()

	list := r.waiters[token]
	for i, w := range list {
		if w == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(r.waiters, token)
		return
	}
	r.waiters[token] = list
}

// notifyEnded wakes the CancelAndWait calls on this registry that wait for
// the end of the run with the given token.
func (r *Registry) notifyEnded(token string, d time.Duration) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	r.notifyEndedLocked(token, d)
}

// notifyEndedLocked is notifyEnded for a caller that holds r.mu.
func (r *Registry) notifyEndedLocked(token string, d time.Duration) {
	for _, ch := range r.waiters[token] {
		select {
		case ch <- d:
		default:
		}
	}
}
