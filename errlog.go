package streamcancel

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// errorKind names the operation whose error the registry handled.
type errorKind int

const (
	kindStart     errorKind = iota // registering a new run
	kindRelease                    // removing a run's marker
	kindSync                       // polling records and extending leases
	kindSubscribe                  // the Pub/Sub subscriber
	kindConflict                   // a run lost its marker to another run
	kindCount
)

// message is the log message of an error of kind k.
func (k errorKind) message() string {
	switch k {
	case kindConflict:
		return "streamcancel: run lost its marker to another run of the stream"
	case kindStart:
		return "streamcancel: start failed to register the run; it continues unregistered"
	}
	return "streamcancel: " + k.String() + " failed"
}

func (k errorKind) String() string {
	switch k {
	case kindStart:
		return "start"
	case kindRelease:
		return "release"
	case kindSync:
		return "sync"
	case kindSubscribe:
		return "subscribe"
	case kindConflict:
		return "conflict"
	}
	return "unknown"
}

// Stats is a snapshot of a registry's counters, for metrics and tests.
// Error counts include errors that were not logged because of the
// once-per-10-seconds limit.
type Stats struct {
	// ActiveRuns is the number of runs on this registry not yet closed.
	// After Registry.Close the run counts no longer change.
	ActiveRuns int

	// UnregisteredRuns is the number of active runs whose marker is not
	// known to be in Redis, because Redis failed or another run holds
	// the stream. Cancels from other nodes cannot find them.
	UnregisteredRuns int

	// Subscribed is true while the Pub/Sub subscriber is subscribed and
	// its connection replied recently.
	Subscribed bool

	// Subscriptions counts successful SUBSCRIBE calls, the first included.
	Subscriptions uint64

	// PushesReceived counts messages received over Pub/Sub (cancels,
	// takeovers and the ends of runs that CancelAndWait waits for),
	// including those for runs of other registries with the same node ID,
	// but not probes.
	PushesReceived uint64

	// Probes counts PollIntervals at which a probe message, published to
	// this node's channel, came back over Pub/Sub in time and proved that
	// no push was lost, so the registry read only the records of runs
	// that no earlier read covered. It stays 0 on Redis Cluster, where
	// every PollInterval reads every record.
	Probes uint64

	// Errors handled by the registry, by operation. CancelErrors counts
	// errors that Cancel returned to its caller.
	StartErrors     uint64
	CancelErrors    uint64
	ReleaseErrors   uint64
	SyncErrors      uint64
	SubscribeErrors uint64

	// Conflicts counts passes that found a run's stream held by another
	// run after the run's marker was lost.
	Conflicts uint64
}

// counters are the registry's atomic counters behind Stats.
type counters struct {
	subscriptions  atomic.Uint64
	pushesReceived atomic.Uint64
	cancelErrors   atomic.Uint64
	errors         [kindCount]atomic.Uint64

	// probesConfirmed counts PollIntervals that a probe served instead of
	// a read.
	probesConfirmed atomic.Uint64
}

// Stats returns a snapshot of the registry's counters. It is safe for
// concurrent use and does not contact Redis.
func (r *Registry) Stats() Stats {
	s := Stats{
		Subscribed:      r.pushReady.Load(),
		Subscriptions:   r.stats.subscriptions.Load(),
		PushesReceived:  r.stats.pushesReceived.Load(),
		Probes:          r.stats.probesConfirmed.Load(),
		StartErrors:     r.stats.errors[kindStart].Load(),
		CancelErrors:    r.stats.cancelErrors.Load(),
		ReleaseErrors:   r.stats.errors[kindRelease].Load(),
		SyncErrors:      r.stats.errors[kindSync].Load(),
		SubscribeErrors: r.stats.errors[kindSubscribe].Load(),
		Conflicts:       r.stats.errors[kindConflict].Load(),
	}

	r.mu.RLock()
	runs := r.snapshotLocked()
	r.mu.RUnlock()
	for _, c := range runs {
		s.ActiveRuns++
		if !c.registered.Load() {
			s.UnregisteredRuns++
		}
	}
	return s
}

// reportError counts err and logs it unless an error of the same kind was
// logged less than the log interval ago.
func (r *Registry) reportError(kind errorKind, streamID string, err error) {
	if kind != kindConflict {
		refreshTopology(r.rdb, err)
	}
	r.stats.errors[kind].Add(1)
	r.errLog.log(kind, streamID, r.cfg.nodeID, err)
}

// errorLog logs at most one record per error kind per interval and
// reports how many were suppressed in between.
type errorLog struct {
	logger   *slog.Logger
	interval time.Duration

	mu         sync.Mutex
	last       [kindCount]time.Time
	suppressed [kindCount]uint64
}

func (l *errorLog) log(kind errorKind, streamID, nodeID string, err error) {
	l.mu.Lock()
	now := time.Now()
	if !l.last[kind].IsZero() && now.Sub(l.last[kind]) < l.interval {
		l.suppressed[kind]++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed[kind]
	l.last[kind] = now
	l.suppressed[kind] = 0
	l.mu.Unlock()

	l.logger.Error(kind.message(),
		slog.String("op", kind.String()),
		slog.String("stream_id", streamID),
		slog.String("node_id", nodeID),
		slog.Any("error", err),
		slog.Uint64("suppressed", suppressed),
	)
}
