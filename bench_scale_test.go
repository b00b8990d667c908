package streamcancel_test

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/streamcancel/streamcancel"
)

// The scale benchmarks keep 10,000 runs active. In the one-registry case a
// PollInterval of 200ms and a TTL of 3s (refresh every 1s) put many
// background passes inside one benchmark run, and poll five times as
// often as the default.
const (
	scaleRuns    = 10000
	scalePoll    = 200 * time.Millisecond
	scaleTTL     = 3 * time.Second
	scaleRefresh = scaleTTL / 3
	scaleWorkers = 8
)

// runPool is a set of active runs of one registry.
type runPool struct {
	reg    *streamcancel.Registry
	name   string
	mu     sync.Mutex
	runs   []*streamcancel.Checker
	starts int
}

// fill starts runs until the pool contains n, on scaleWorkers goroutines.
func (p *runPool) fill(b *testing.B, n int) {
	b.Helper()
	ctx := context.Background()
	errs := make(chan error, scaleWorkers)
	var wg sync.WaitGroup
	for w := 0; w < scaleWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				p.mu.Lock()
				if len(p.runs) >= n {
					p.mu.Unlock()
					return
				}
				p.starts++
				id := p.name + "-" + strconv.Itoa(p.starts)
				p.runs = append(p.runs, nil)
				slot := len(p.runs) - 1
				p.mu.Unlock()

				chk, err := p.reg.Start(ctx, id)
				if err != nil {
					errs <- err
					return
				}
				p.mu.Lock()
				p.runs[slot] = chk
				p.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("Start: %v", err)
	}
}

// take removes a run from the pool and returns it.
func (p *runPool) take() *streamcancel.Checker {
	p.mu.Lock()
	defer p.mu.Unlock()
	chk := p.runs[len(p.runs)-1]
	p.runs = p.runs[:len(p.runs)-1]
	return chk
}

// closeAll closes every run in the pool.
func (p *runPool) closeAll() {
	for _, chk := range p.runs {
		if chk != nil {
			_ = chk.Close()
		}
	}
	p.runs = nil
}

// closeRuns closes runs on scaleWorkers goroutines.
func closeRuns(runs []*streamcancel.Checker) {
	var wg sync.WaitGroup
	for w := 0; w < scaleWorkers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(runs); i += scaleWorkers {
				_ = runs[i].Close()
			}
		}(w)
	}
	wg.Wait()
}

// heapInUse returns the live heap after a full collection. A background
// pass over all runs allocates for a moment, so it takes the least of
// readings spread over more than one PollInterval.
func heapInUse() uint64 {
	var least uint64
	for i := 0; i < 8; i++ {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		if i == 0 || m.HeapAlloc < least {
			least = m.HeapAlloc
		}
		time.Sleep(scalePoll / 6)
	}
	return least
}

// heapUnderParents starts n runs of reg, each under a parent context of
// its own that can end, and returns the heap per run that they add beyond
// the parents. Then it closes the runs.
func heapUnderParents(b *testing.B, reg *streamcancel.Registry, n int) float64 {
	b.Helper()
	parents := make([]context.Context, n)
	cancels := make([]context.CancelFunc, n)
	for i := range parents {
		parents[i], cancels[i] = context.WithCancel(context.Background())
	}
	defer func() {
		for _, cancel := range cancels {
			cancel()
		}
	}()

	before := heapInUse()
	runs := make([]*streamcancel.Checker, n)
	for i := range runs {
		chk, err := reg.Start(parents[i], "parent-"+strconv.Itoa(i))
		if err != nil {
			b.Fatalf("Start: %v", err)
		}
		runs[i] = chk
	}
	perRun := float64(int64(heapInUse())-int64(before)) / float64(n)

	closeRuns(runs)
	return perRun
}

// BenchmarkScaleOneRegistry keeps 10,000 runs active on one registry and
// cancels them one at a time from a second registry. One op is one cancel,
// from Cancel until the run's Context is done. It also reports:
//
//   - B/run: the registry's heap per run, and redis-B/run: the server's
//     memory per run, measured while the runs were started;
//   - parent-B/run: the heap per run of 2,000 runs started under parent
//     contexts that can end, as request contexts can, beyond those
//     parents' own heap;
//   - probes/poll, reads/poll and extends/refresh: the registry's probes
//     and pipelined reads per PollInterval, and its pipelined lease
//     refreshes per refresh interval, since the runs were started;
//     poll-trips/poll is the sum of the first two;
//   - refresh-pass-ms: the mean time of one refresh pipeline over all
//     runs, which is also what a read of all runs costs where probes
//     prove nothing (Redis Cluster);
//   - registers: pipelines that registered runs again, which happens only
//     when markers were lost.
func BenchmarkScaleOneRegistry(b *testing.B) {
	srv, admin := benchServer(b)
	hook := newRoundTrips()
	regA := benchRegistry(b, benchClient(b, srv.Addr(), hook), "node-a",
		streamcancel.WithPollInterval(scalePoll), streamcancel.WithTTL(scaleTTL))
	regB := benchRegistry(b, benchClient(b, srv.Addr()), "node-b")
	pool := &runPool{reg: regA, name: "scale"}
	b.Cleanup(func() {
		_ = regA.Close()
		pool.closeAll()
	})

	// Warm up the client's connections before the heap is measured.
	pool.fill(b, 2*scaleWorkers)
	closeRuns(pool.runs)
	pool.runs = nil

	parentHeapPerRun := heapUnderParents(b, regA, 2000)

	heapBefore, redisBefore := heapInUse(), usedMemory(b, admin)
	pool.fill(b, scaleRuns)
	heapPerRun := float64(int64(heapInUse())-int64(heapBefore)) / scaleRuns
	redisPerRun := float64(usedMemory(b, admin)-redisBefore) / scaleRuns

	since, probes := time.Now(), regA.Stats().Probes
	hook.reset()

	b.Run("runs=10000", func(b *testing.B) {
		if b.N > scaleRuns {
			b.Fatalf("b.N = %d cancels, at most %d: run with -benchtime=%dx or less", b.N, scaleRuns, scaleRuns)
		}
		pool.fill(b, scaleRuns)
		ctx := context.Background()
		samples := make(latencies, 0, b.N)
		canceled := make([]*streamcancel.Checker, 0, b.N)

		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			chk := pool.take()
			done := doneAt(chk.Context())
			start := time.Now()
			res, err := regB.Cancel(ctx, chk.StreamID())
			if err != nil || !res.Found {
				b.Fatalf("Cancel of %q = %+v, %v; want Found", chk.StreamID(), res, err)
			}
			samples = append(samples, awaitTime(b, done, "the run's Context done").Sub(start))
			canceled = append(canceled, chk)
		}
		b.StopTimer()
		closeRuns(canceled)

		// The round trips are counted over at least three refresh
		// intervals, so that even a short run contains several.
		time.Sleep(time.Until(since.Add(3 * scaleRefresh)))

		samples.report(b, "")
		b.ReportMetric(heapPerRun, "B/run")
		b.ReportMetric(parentHeapPerRun, "parent-B/run")
		b.ReportMetric(redisPerRun, "redis-B/run")
		polls := float64(time.Since(since)) / float64(scalePoll)
		probed, read := float64(regA.Stats().Probes-probes)/polls, float64(hook.modeCount("read"))/polls
		b.ReportMetric(probed, "probes/poll")
		b.ReportMetric(read, "reads/poll")
		b.ReportMetric(probed+read, "poll-trips/poll")
		b.ReportMetric(hook.perInterval("extend", scaleRefresh), "extends/refresh")
		b.ReportMetric(float64(hook.modeCount("register")), "registers")
		b.ReportMetric(float64(hook.meanPass("extend"))/float64(time.Millisecond), "refresh-pass-ms")
	})
}

// scaleRate is the cancel rate of BenchmarkScaleFourRegistries.
const scaleRate = 1000

// BenchmarkScaleFourRegistries keeps 10,000 runs active over four
// registries with default options and sends 1,000 cancels per second, each from the registry
// after the run's own, round robin. One op is one cancel. It fails when
// any cancel is not delivered within 5s, and reports the latency from
// Cancel until the run's Context is done and the rate reached.
func BenchmarkScaleFourRegistries(b *testing.B) {
	srv, _ := benchServer(b)
	const registries = 4
	pools := make([]*runPool, registries)
	for i := range pools {
		reg := benchRegistry(b, benchClient(b, srv.Addr()), "node-"+strconv.Itoa(i))
		pools[i] = &runPool{reg: reg, name: "rate-" + strconv.Itoa(i)}
	}
	b.Cleanup(func() {
		for _, p := range pools {
			_ = p.reg.Close()
			p.closeAll()
		}
	})

	b.Run("runs=10000/cancels-per-s=1000", func(b *testing.B) {
		if b.N > scaleRuns {
			b.Fatalf("b.N = %d cancels, at most %d: run with -benchtime=%dx or less", b.N, scaleRuns, scaleRuns)
		}
		for _, p := range pools {
			p.fill(b, scaleRuns/registries)
		}
		ctx := context.Background()
		starts := make([]time.Time, b.N)
		dones := make([]<-chan time.Time, b.N)
		targets := make([]*streamcancel.Checker, b.N)
		errs := make(chan error, b.N)
		var wg sync.WaitGroup

		b.ResetTimer()
		begin := time.Now()
		for i := 0; i < b.N; i++ {
			if wait := time.Until(begin.Add(time.Duration(i) * time.Second / scaleRate)); wait > 0 {
				time.Sleep(wait)
			}

			owner := i % registries
			chk := pools[owner].take()
			canceler := pools[(owner+1)%registries].reg
			targets[i], dones[i] = chk, doneAt(chk.Context())

			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				starts[i] = time.Now()
				res, err := canceler.Cancel(ctx, targets[i].StreamID())
				if err == nil && !res.Found {
					err = errNotFound(targets[i].StreamID())
				}
				errs <- err
			}(i)
		}
		issued := time.Since(begin)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatalf("Cancel: %v", err)
			}
		}

		samples := make(latencies, 0, b.N)
		deadline := time.After(benchWaitLimit)
		for i := range dones {
			select {
			case at := <-dones[i]:
				samples = append(samples, at.Sub(starts[i]))
			case <-deadline:
				b.Fatalf("%d of %d cancels were not delivered within %v", b.N-i, b.N, benchWaitLimit)
			}
		}
		b.StopTimer()
		closeRuns(targets)

		samples.report(b, "")
		b.ReportMetric(float64(b.N)/issued.Seconds(), "cancels/s")
	})
}

// errNotFound reports a Cancel that did not find an active run.
type errNotFound string

func (e errNotFound) Error() string {
	return "Cancel of " + strconv.Quote(string(e)) + " found no active run"
}
