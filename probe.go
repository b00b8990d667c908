package streamcancel

import (
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// A probe replaces the periodic read of every run's record with one PING
// on the subscriber's connection, where that proves as much.
//
// Redis writes the replies and pushes of one connection in the order it
// produces them. A cancel script stores its record and publishes in one
// step, so once the PONG of a PING arrives, every push published before
// Redis ran that PING has arrived before it and has been applied. Take a
// full read of all runs that succeeded on the same subscription. A cancel
// recorded after it was either pushed before the PING, and has reached its
// run, or after it, and the next probe or read covers it. A missing PONG
// costs the full read, at most pongWait late.
//
// The proof needs the subscriber and the scripts on one server. It holds
// for a *redis.Client that dials one address; on Redis Cluster a push
// reaches the subscriber's node over the cluster bus, and a Sentinel
// client's subscriber may still listen on a replica, so those keep the
// read. Every lease refresh also reads each run's record, which bounds how
// long any record can go unread.
//
// NOTE: miniredis writes each push from a goroutine of its own, so there a
// PONG can overtake a push by moments. The push still arrives unless the
// connection drops, and a new subscription always triggers a full read.

// Bounds of how long a probe waits for its PONG: PollInterval /
// pongWaitDivisor, and at least minPongWait.
const (
	pongWaitDivisor = 50
	minPongWait     = time.Millisecond
)

// probePrefix starts the payload of a probe PING; a sequence number
// follows.
const probePrefix = "streamcancel-probe-"

// orderedPusher is implemented by clients that know whether their
// subscriber connection and their commands reach the same server.
type orderedPusher interface {
	orderedPush() bool
}

// provesByPing reports whether a PONG on rdb's subscriber connection
// proves that earlier pushes have arrived (see probe).
func provesByPing(rdb redis.UniversalClient) bool {
	if o, ok := rdb.(orderedPusher); ok {
		return o.orderedPush()
	}
	c, ok := rdb.(*redis.Client)

	// redis.NewFailoverClient returns a *redis.Client with this address.
	return ok && c.Options().Addr != "FailoverClient"
}

// pongWait is how long a probe waits for its PONG.
func (c *config) pongWait() time.Duration {
	return max(c.pollInterval/pongWaitDivisor, minPongWait)
}

// probe sends a PING on the subscription of epoch and reports whether its
// PONG arrived within pongWait, on that subscription, with every push
// before it applied. It is called only from the background loop, which
// owns r.probeSeq.
func (r *Registry) probe(epoch uint64) bool {
	if !r.pushReady.Load() || r.pushEpoch.Load() != epoch || !r.probing.CompareAndSwap(false, true) {
		return false
	}
	r.psMu.Lock()
	ps := r.ps
	r.psMu.Unlock()
	if ps == nil {
		r.probing.Store(false)
		return false
	}

	// Drop the PONG of an earlier probe that came too late.
	select {
	case <-r.pongs:
	default:
	}
	r.probeSeq++
	want := r.probeSeq

	// A PING can block while go-redis dials again, so it runs on its own
	// goroutine, one at a time, bounded by the client's dial and write
	// timeouts.
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.probing.Store(false)
		_ = ps.Ping(r.ctx, probePrefix+strconv.FormatUint(want, 10))
	}()

	timer := time.NewTimer(r.cfg.pongWait())
	defer timer.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return false
		case <-timer.C:
			return false
		case got := <-r.pongs:
			if got == want {
				return r.pushEpoch.Load() == epoch
			}
		}
	}
}

// handleProbePong passes the sequence number of a probe's PONG to the
// background loop. It never blocks, so a PONG that no probe waits for is
// dropped.
func (r *Registry) handleProbePong(payload string) {
	n, ok := strings.CutPrefix(payload, probePrefix)
	if !ok {
		return
	}
	seq, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return
	}
	select {
	case r.pongs <- seq:
	default:
	}
}

// readAll reads the records of runs in one pass and returns the
// subscription epoch that the pass covers, or 0. A pass covers the epoch
// of a subscription that was ready before it began, when it succeeded for
// every run and probes can prove anything on this client.
func (r *Registry) readAll(runs []*Checker) uint64 {
	epoch := r.readyEpoch()

	ok := r.syncRuns(runs, modeRead)

	if !ok || epoch == 0 || !r.probes {
		return 0
	}
	markCovered(runs, epoch)
	return epoch
}

// readyEpoch returns the epoch of the current subscription when Redis has
// confirmed it, else 0.
func (r *Registry) readyEpoch() uint64 {
	epoch := r.pushEpoch.Load()
	if !r.pushReady.Load() {
		return 0
	}
	return epoch
}

// markCovered records that every cancel of runs recorded from now on
// reaches them by a push on the subscription of epoch.
func markCovered(runs []*Checker, epoch uint64) {
	for _, c := range runs {
		c.coveredEpoch.Store(epoch)
	}
}

// uncovered returns those of runs that a probe on the subscription of
// epoch proves nothing for: runs not known to hold their marker, and runs
// that the full read of that subscription missed because they were still
// in Start.
func uncovered(runs []*Checker, epoch uint64) []*Checker {
	var out []*Checker
	for _, c := range runs {
		if !c.registered.Load() || c.coveredEpoch.Load() != epoch {
			out = append(out, c)
		}
	}
	return out
}

// pollTick is the background loop's work at each PollInterval. covered is
// the epoch that the last full read covers, or 0; pollTick returns the new
// one.
func (r *Registry) pollTick(covered uint64) uint64 {
	runs := r.snapshot()
	if len(runs) == 0 {
		return covered
	}
	if covered != 0 && r.probe(covered) {
		r.stats.probesConfirmed.Add(1)

		// A run whose Start failed open registers at the next pass, as
		// it would in a full read. A run whose Start began before this
		// subscription was ready may have missed a push that no full
		// read found.
		rest := uncovered(runs, covered)
		if r.syncRuns(rest, modeRead) {
			markCovered(rest, covered)
		}
		return covered
	}
	return r.readAll(runs)
}
