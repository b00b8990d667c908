package streamcancel_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/streamcancel/streamcancel"
)

// benchBackends runs fn against a miniredis and against a redis-server of
// its own, with two registries named node-a and node-b.
func benchBackends(b *testing.B, fn func(b *testing.B, a, w *streamcancel.Registry)) {
	run := func(b *testing.B, addr string) {
		a := benchRegistry(b, benchClient(b, addr), "node-a")
		w := benchRegistry(b, benchClient(b, addr), "node-b")
		fn(b, a, w)
	}

	b.Run("miniredis", func(b *testing.B) {
		m := miniredis.RunT(b)
		run(b, m.Addr())
	})
	b.Run("redis", func(b *testing.B) {
		srv, _ := benchServer(b)
		run(b, srv.Addr())
	})
}

// BenchmarkCancelAndWait measures CancelAndWait from node-b of a run on
// node-a whose loop closes its Checker as soon as its Context is done.
// The call takes the cancel script, a read of the ended record, the push
// to node-a, the release script and the push back to node-b. One op is
// one run with its Start. It reports the latency of the CancelAndWait
// call alone, and the StopDuration that it returns: how long the run took
// to close after its cancel arrived.
func BenchmarkCancelAndWait(b *testing.B) {
	benchBackends(b, func(b *testing.B, a, w *streamcancel.Registry) {
		calls := make(latencies, 0, b.N)
		stops := make(latencies, 0, b.N)
		for i := 0; i < b.N; i++ {
			id := "chat-" + strconv.Itoa(i)
			chk, err := a.Start(ctx, id)
			if err != nil {
				b.Fatalf("Start: %v", err)
			}
			go func() {
				<-chk.Context().Done()
				_ = chk.Close()
			}()

			start := time.Now()
			res, err := w.CancelAndWait(ctx, id)
			if err != nil || !res.Found {
				b.Fatalf("CancelAndWait of %q = %+v, %v; want Found", id, res, err)
			}
			calls = append(calls, time.Since(start))
			stops = append(stops, res.StopDuration)
		}

		calls.report(b, "")
		stops.report(b, "stop-")
	})
}

// benchGroupSize is the number of runs in each group of
// BenchmarkCancelGroup.
const benchGroupSize = 3

// BenchmarkCancelGroup measures CancelGroup from node-b of a group of three
// runs on node-a: the script that lists the members, one pipeline of
// cancel scripts and a push to node-a for each run. One op is one group
// with the Start and Close of its runs. It reports the latency until
// CancelGroup returns, and until the Context of the last of the three
// runs is done.
func BenchmarkCancelGroup(b *testing.B) {
	benchBackends(b, func(b *testing.B, a, w *streamcancel.Registry) {
		calls := make(latencies, 0, b.N)
		lastDones := make(latencies, 0, b.N)
		for i := 0; i < b.N; i++ {
			group := "conv-" + strconv.Itoa(i)
			runs := make([]*streamcancel.Checker, benchGroupSize)
			dones := make([]<-chan time.Time, benchGroupSize)
			for j := range runs {
				chk, err := a.Start(ctx, group+"-"+strconv.Itoa(j), streamcancel.WithGroup(group))
				if err != nil {
					b.Fatalf("Start: %v", err)
				}
				runs[j], dones[j] = chk, doneAt(chk.Context())
			}

			start := time.Now()
			n, err := w.CancelGroup(ctx, group)
			if err != nil || n != benchGroupSize {
				b.Fatalf("CancelGroup of %q = %d, %v; want %d runs canceled", group, n, err, benchGroupSize)
			}
			calls = append(calls, time.Since(start))

			var last time.Time
			for j := range dones {
				if at := awaitTime(b, dones[j], "the Context of run "+runs[j].StreamID()+" done"); at.After(last) {
					last = at
				}
			}
			lastDones = append(lastDones, last.Sub(start))

			for _, chk := range runs {
				_ = chk.Close()
			}
		}

		calls.report(b, "")
		lastDones.report(b, "last-done-")
	})
}
