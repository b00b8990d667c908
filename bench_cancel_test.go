package streamcancel_test

import (
	"context"
	"math/rand"
	"strconv"
	"testing"
	"time"

	"github.com/streamcancel/streamcancel"
)

// BenchmarkCrossNodeCancel measures how long a cancel takes from Cancel on
// node B until the run on node A sees it, against a raw PUBLISH until a
// subscriber receives it, on the same server in the same run. One op is
// one cancel (or one message) with the run's Start and Close.
//
// The observer on node A is woken by the end of the run's Context and
// then calls Cancelled, which must return true: the registry sets the flag
// that Cancelled reads before it cancels the context. The benchmark fails
// otherwise. The time taken after that call is an upper bound, verified
// for every sample, of when Cancelled began to return true. A loop that
// polls Cancelled instead would add its own wait between checks, and a
// spinning one would take a core from Redis and the subscriber on a
// two-core machine.
func BenchmarkCrossNodeCancel(b *testing.B) {
	srv, _ := benchServer(b)
	ctx := context.Background()

	b.Run("raw-PUBLISH", func(b *testing.B) {
		sub := benchClient(b, srv.Addr()).Subscribe(ctx, "bench:raw")
		if _, err := sub.Receive(ctx); err != nil {
			b.Fatalf("SUBSCRIBE: %v", err)
		}
		received := make(chan time.Time, 1)
		go func() {
			for {
				if _, err := sub.ReceiveMessage(ctx); err != nil {
					return
				}
				received <- time.Now()
			}
		}()
		b.Cleanup(func() { _ = sub.Close() })
		pub := benchClient(b, srv.Addr())

		samples := make(latencies, 0, b.N)
		for i := 0; i < b.N; i++ {
			start := time.Now()
			if err := pub.Publish(ctx, "bench:raw", "token").Err(); err != nil {
				b.Fatalf("PUBLISH: %v", err)
			}
			samples = append(samples, awaitTime(b, received, "the message").Sub(start))
		}
		samples.report(b, "")
	})

	b.Run("streamcancel", func(b *testing.B) {
		regA := benchRegistry(b, benchClient(b, srv.Addr()), "node-a")
		regB := benchRegistry(b, benchClient(b, srv.Addr()), "node-b")

		dones := make(latencies, 0, b.N)
		flips := make(latencies, 0, b.N)
		unpushed := 0
		for i := 0; i < b.N; i++ {
			id := "cross-" + strconv.Itoa(i)
			chk, err := regA.Start(ctx, id)
			if err != nil {
				b.Fatalf("Start: %v", err)
			}
			seen := observeDone(chk)

			start := time.Now()
			res, err := regB.Cancel(ctx, id)
			if err != nil || !res.Found {
				b.Fatalf("Cancel of %q = %+v, %v; want Found", id, res, err)
			}
			if !res.Pushed {
				unpushed++
			}

			var obs doneObservation
			select {
			case obs = <-seen:
			case <-time.After(benchWaitLimit):
				b.Fatalf("the Context of run %q was not done within %v of Cancel", id, benchWaitLimit)
			}
			if !obs.cancelled {
				b.Fatalf("Cancelled() of run %q = false once its Context was done, want true", id)
			}
			dones = append(dones, obs.done.Sub(start))
			flips = append(flips, obs.checked.Sub(start))
			_ = chk.Close()
		}

		dones.report(b, "done-")
		flips.report(b, "flip-bound-")
		b.ReportMetric(float64(unpushed), "unpushed")
	})
}

// doneObservation is what an observer saw when a run's Context was done:
// the time it woke, the result of Cancelled then, and the time after that
// call returned.
type doneObservation struct {
	done      time.Time
	cancelled bool
	checked   time.Time
}

// observeDone returns a channel that receives one observation once the
// Context of chk is done.
func observeDone(chk *streamcancel.Checker) <-chan doneObservation {
	seen := make(chan doneObservation, 1)
	context.AfterFunc(chk.Context(), func() {
		obs := doneObservation{done: time.Now()}
		obs.cancelled = chk.Cancelled()
		obs.checked = time.Now()
		seen <- obs
	})
	return seen
}

// pushLostPoll is the PollInterval in BenchmarkPushLost. The poll bounds
// the cancel latency when a push is lost.
const pushLostPoll = 100 * time.Millisecond

// BenchmarkPushLost measures the cancel latency when the Pub/Sub push does
// not arrive, from Cancel on node B until the run's Context on node A is
// done, with PollInterval 100ms. One op is one cancel.
//
//   - subscriber-killed: CLIENT KILL TYPE pubsub just before the cancels,
//     so the registry re-subscribes and reads the records at once.
//   - subscriber-half-open: node A's connections go through a fault
//     proxy, which freezes only the subscriber's connection just before
//     the cancels, so the pushes and the probes stay in the proxy and the
//     subscriber does not notice at first. Its other connections stay
//     healthy, so the first probe that does not come back makes its
//     PollInterval a full read, which finds the cancels.
func BenchmarkPushLost(b *testing.B) {
	srv, admin := benchServer(b)
	quietRedisLog(b)
	ctx := context.Background()

	b.Run("subscriber-killed", func(b *testing.B) {
		regA := benchRegistry(b, benchClient(b, srv.Addr()), "node-a", streamcancel.WithPollInterval(pushLostPoll))
		regB := benchRegistry(b, benchClient(b, srv.Addr()), "node-b")

		// Ten cancels are sent well before the registry re-subscribes,
		// which it does 10ms after it sees the connection closed.
		benchLostPushes(b, regA, regB, 10, func() {
			if err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
				b.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
			}
		}, func() {})
	})

	b.Run("subscriber-half-open", func(b *testing.B) {
		proxy := benchProxy(b, srv.Addr())
		regA := benchRegistry(b, benchClient(b, proxy.Addr()), "node-a", streamcancel.WithPollInterval(pushLostPoll))
		regB := benchRegistry(b, benchClient(b, srv.Addr()), "node-b")

		benchLostPushes(b, regA, regB, 50, func() {
			if n := proxy.FreezeSubscribers(); n != 1 {
				b.Fatalf("FreezeSubscribers froze %d connections, want 1", n)
			}
		}, proxy.Thaw)
	})
}

// benchLostPushes cancels b.N runs of regA from regB in rounds of up to
// perRound runs. Each round waits for regA's subscriber, starts the runs,
// waits a random part of a PollInterval, calls disrupt, cancels the runs,
// waits until all are done, and calls restore. It reports the latency
// from each Cancel call until the run's Context is done, and the share of
// pushes regA received meanwhile.
//
// Without the random wait every round would begin just after the poll
// that ended the round before, and every cancel would wait almost a whole
// PollInterval.
func benchLostPushes(b *testing.B, regA, regB *streamcancel.Registry, perRound int, disrupt, restore func()) {
	ctx := context.Background()
	samples := make(latencies, 0, b.N)
	var pushes uint64

	for len(samples) < b.N {
		n := min(perRound, b.N-len(samples))
		awaitSubscribed(b, regA)

		runs := make([]*streamcancel.Checker, n)
		dones := make([]<-chan time.Time, n)
		for i := range runs {
			chk, err := regA.Start(ctx, "lost-"+strconv.Itoa(i))
			if err != nil {
				b.Fatalf("Start: %v", err)
			}
			runs[i], dones[i] = chk, doneAt(chk.Context())
		}

		time.Sleep(time.Duration(rand.Int63n(int64(pushLostPoll))))
		pushesBefore := regA.Stats().PushesReceived
		disrupt()
		starts := make([]time.Time, n)
		for i, chk := range runs {
			starts[i] = time.Now()
			res, err := regB.Cancel(ctx, chk.StreamID())
			if err != nil || !res.Found {
				b.Fatalf("Cancel of %q = %+v, %v; want Found", chk.StreamID(), res, err)
			}
		}
		for i := range runs {
			samples = append(samples, awaitTime(b, dones[i], "the run's Context done").Sub(starts[i]))
		}
		pushes += regA.Stats().PushesReceived - pushesBefore
		restore()

		for _, chk := range runs {
			_ = chk.Close()
		}
	}

	samples.report(b, "")
	b.ReportMetric(float64(pushes)/float64(len(samples)), "pushes/cancel")
}
