package streamcancel

import (
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A probe replaces the periodic read of every run's record with one
// message that the registry publishes to its own channel, where that
// proves as much.
//
// A cancel script stores its record and publishes its push in one step.
// Redis writes a channel's messages to each subscriber in the order it ran
// the PUBLISH commands. So once the probe's message arrives at a
// subscriber of the server that ran it, every push published there before
// the probe has arrived before it and has been applied. Consider a full
// read of all runs that succeeded on the same subscription. A cancel
// recorded after that read was pushed either before the probe, and has
// reached its run, or after it, and the next probe or read covers it. A probe that does not come back costs the full
// read, at most probeWait late.
//
// The proof needs the cancel scripts, the probe and the subscriber on one
// server. The scripts and the probe share it on a *redis.Client,
// Sentinel's included. The subscriber may not: behind an address that
// moved to a new primary it can stay on the old one, now a replica. A
// replica delivers only the pushes that reach it through replication, and
// one that resynchronized in full has lost those sent while it was away,
// while later probes reach it again. So a probe proves nothing unless its
// PUBLISH reports a receiver on the server that ran it.
//
// NOTE: PUBLISH counts every subscriber of the channel on that server,
// such as another registry with the same node ID or a tool that
// subscribed by pattern. Such a subscriber hides a subscriber of this
// registry that stayed on a replica. On Redis Cluster
// the pushes come from every primary over the cluster bus, in no order
// with the probe, so a cluster keeps the read. Every lease refresh also
// reads each run's record, which bounds how long any record can go unread.

// Bounds of how long a probe waits for its message: PollInterval /
// probeWaitDivisor, at least minProbeWait and at most maxProbeWait. The
// background loop waits for it, so a long wait would delay lease
// refreshes.
const (
	probeWaitDivisor = 50
	minProbeWait     = time.Millisecond
	maxProbeWait     = 100 * time.Millisecond
)

// orderedPusher is implemented by clients that know whether the pushes
// their subscriber receives arrive in the order of the commands they
// send.
type orderedPusher interface {
	orderedPush() bool
}

// probesProve reports whether a probe on rdb proves that earlier pushes
// have arrived (see probe): true for a *redis.Client, the client of
// redis.NewFailoverClient included, and false for other clients.
func probesProve(rdb redis.UniversalClient) bool {
	if o, ok := rdb.(orderedPusher); ok {
		return o.orderedPush()
	}
	_, ok := rdb.(*redis.Client)
	return ok
}

// probeWait is how long a probe waits for its message.
func (c *config) probeWait() time.Duration {
	return min(max(c.pollInterval/probeWaitDivisor, minProbeWait), maxProbeWait)
}

// probe publishes a probe message to the node's channel and reports
// whether, within probeWait, the PUBLISH reported a receiver and the
// message arrived on the subscription of epoch, with every push before it
// applied. It is called only from the background loop, which owns
// r.probeSeq.
func (r *Registry) probe(epoch uint64) bool {
	if !r.probing.CompareAndSwap(false, true) {
		return false
	}

	// Drop the message of an earlier probe that came too late.
	select {
	case <-r.probeAcks:
	default:
	}
	r.probeSeq++
	want := r.probeSeq

	// The PUBLISH runs on its own goroutine, one at a time, so that a slow
	// Redis delays the full read by probeWait at most. go-redis bounds it
	// by the client's timeouts. A failed PUBLISH counts no receiver.
	receivers := make(chan int64, 1)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.probing.Store(false)
		n, _ := r.rdb.Publish(r.ctx, r.channel, "probe "+r.probeID+" "+strconv.FormatUint(want, 10)).Result()
		receivers <- n
	}()

	timer := time.NewTimer(r.cfg.probeWait())
	defer timer.Stop()
	arrived, received := false, false
	for !arrived || !received {
		select {
		case <-r.ctx.Done():
			return false
		case <-timer.C:
			return false
		case n := <-receivers:
			if n < 1 {
				return false
			}
			received = true
		case got := <-r.probeAcks:
			arrived = arrived || got == want
		}
	}
	return r.pushEpoch.Load() == epoch
}

// handleProbe passes the sequence number of a probe message to the
// background loop, when the message is this registry's. It never blocks,
// so a message that no probe waits for is dropped.
func (r *Registry) handleProbe(id, number string) {
	if id != r.probeID {
		return
	}
	seq, err := strconv.ParseUint(number, 10, 64)
	if err != nil {
		return
	}
	select {
	case r.probeAcks <- seq:
	default:
	}
}

// readAll reads the records of runs in one pass. When the pass succeeded
// for every run, began while a subscription was confirmed, and probes can
// prove anything on this client, it marks the runs covered by that
// subscription.
func (r *Registry) readAll(runs []*Checker) {
	epoch := r.readyEpoch()

	if r.syncRuns(runs, modeRead) && epoch != 0 && r.probes {
		markCovered(runs, epoch)
	}
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
// reaches them by a push on the subscription of epoch. Epoch 0 marks them
// uncovered.
func markCovered(runs []*Checker, epoch uint64) {
	for _, c := range runs {
		c.coveredEpoch.Store(epoch)
	}
}

// uncovered returns those of runs that a probe on the subscription of
// epoch proves nothing for: runs not known to hold their marker, and runs
// that no read on that subscription covers, such as runs still in Start
// during its full read or runs whose refresh failed.
func uncovered(runs []*Checker, epoch uint64) []*Checker {
	var out []*Checker
	for _, c := range runs {
		if !c.registered.Load() || c.coveredEpoch.Load() != epoch {
			out = append(out, c)
		}
	}
	return out
}

// pollTick is the background loop's work at each PollInterval. When some
// runs are covered by the current subscription and a probe proves that no
// push was lost, it reads only the other runs. Otherwise it reads all.
func (r *Registry) pollTick() {
	runs := r.snapshot()
	if len(runs) == 0 {
		return
	}

	epoch := r.readyEpoch()
	if epoch == 0 || !r.probes {
		r.readAll(runs)
		return
	}
	rest := uncovered(runs, epoch)
	if len(rest) == len(runs) || !r.probe(epoch) {
		r.readAll(runs)
		return
	}
	r.stats.probesConfirmed.Add(1)

	// A run whose Start failed open registers at the next pass, as it
	// would in a full read. A run whose Start began before this
	// subscription was ready may have missed a push that no full read
	// found.
	if r.syncRuns(rest, modeRead) {
		markCovered(rest, epoch)
	}
}
