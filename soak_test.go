package streamcancel_test

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
	"github.com/streamcancel/streamcancel/internal/faultproxy"
)

// soakEnv names the environment variable that sets the chaos soak's
// duration, such as 60s. Without it the soak runs for soakShort.
const soakEnv = "STREAMCANCEL_SOAK"

const (
	soakShort       = 10 * time.Second
	soakRunsPerMin  = 2000
	soakNodes       = 4
	soakPoll        = 100 * time.Millisecond
	soakTTL         = 5 * time.Second
	soakMaxFault    = time.Second
	soakCancelShare = 0.3
)

// soakDuration returns the soak's duration from soakEnv, or soakShort.
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv(soakEnv)
	if v == "" {
		return soakShort
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, "%s=%q: want a duration such as 60s", soakEnv, v)
	require.Positive(t, d, "%s", soakEnv)
	return d
}

// soakRun is one run of the soak and what happened to it.
type soakRun struct {
	id   string
	chk  *streamcancel.Checker
	done chan struct{} // closed when the loop has ended

	mu sync.Mutex
	// finished is set when the loop ended by itself. A Cancel is sent
	// only before that, and cancelSent is set first.
	finished   bool
	cancelSent bool
	cancelDone bool
	// foundAt is when a Cancel reported the run found.
	foundAt time.Time
	// stoppedAt is when the loop saw Cancelled() return true, and cause
	// the context's cause then.
	stoppedAt time.Time
	cause     error
}

// finish reports whether the loop may end by itself now: not while a
// Cancel is in flight or after one found the run, which must then stop.
func (r *soakRun) finish() bool {
	r.mu.Lock()
	defer r.mu.Unlock()

	if r.cancelSent && (!r.cancelDone || !r.foundAt.IsZero()) {
		return false
	}
	r.finished = true
	return true
}

// cancel sends a Cancel of the run from reg unless the run has finished.
func (r *soakRun) cancel(reg *streamcancel.Registry) (sent bool, res streamcancel.CancelResult, err error) {
	r.mu.Lock()
	if r.finished {
		r.mu.Unlock()
		return false, res, nil
	}
	r.cancelSent = true
	r.mu.Unlock()

	res, err = reg.Cancel(ctx, r.id)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancelDone = true
	if err == nil && res.Found {
		r.foundAt = time.Now()
	}
	return true, res, err
}

// faultStats counts the faults a soak injected, by kind.
type faultStats struct {
	mu     sync.Mutex
	counts map[string]int
}

func (f *faultStats) add(kind string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[kind]++
}

func (f *faultStats) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	kinds := make([]string, 0, len(f.counts))
	for k, n := range f.counts {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kinds)
	return strings.Join(kinds, ", ")
}

// injectFaults puts random faults of at most soakMaxFault on proxy, with
// healthy gaps between them, until stop is closed, and leaves it healthy.
func injectFaults(proxy *faultproxy.Proxy, rng *rand.Rand, stats *faultStats, stop <-chan struct{}) {
	heal := func() {
		proxy.SetDelay(0)
		proxy.Refuse(false)
		proxy.Blackhole(false)
		proxy.Thaw()
	}
	defer heal()

	pause := func(d time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(d):
			return true
		}
	}
	for {
		if !pause(time.Duration(100+rng.Intn(400)) * time.Millisecond) {
			return
		}

		length := time.Duration(rng.Int63n(int64(soakMaxFault)))
		switch rng.Intn(6) {
		case 0:
			stats.add("delay")
			proxy.SetDelay(time.Duration(10+rng.Intn(300)) * time.Millisecond)
		case 1:
			stats.add("cut")
			proxy.Cut()
		case 2:
			stats.add("half-open subscriber")
			proxy.FreezeSubscribers()
		case 3:
			stats.add("stall")
			proxy.Stall()
		case 4:
			stats.add("refuse")
			proxy.Refuse(true)
			proxy.Cut()
		case 5:
			stats.add("blackhole")
			proxy.Blackhole(true)
			proxy.Stall()
		}
		ok := pause(length)
		heal()
		if !ok {
			return
		}
	}
}

// 2,000 runs a minute start on 4 registries, each behind a fault proxy
// that injects random faults of up to 1s: delays, cuts, half-open
// subscribers, stalls, refused connections and blackholes. About a third
// of the runs get a Cancel from a random registry. No run stops without a
// Cancel, every run whose Cancel reported Found stops, and once every run
// and registry is closed no key, connection or goroutine is left.
//
// The soak lasts 10s; STREAMCANCEL_SOAK=60s runs the full minute.
func TestChaosSoak(t *testing.T) {
	duration := soakDuration(t)
	runs := int(float64(soakRunsPerMin) * duration.Minutes())
	seed := time.Now().UnixNano()
	t.Logf("soak of %v with %d runs on %d registries, seed %d", duration, runs, soakNodes, seed)

	e := ownServer(t)
	admin := e.client(t)
	baseline := runtime.NumGoroutine()

	var (
		regs    []*streamcancel.Registry
		proxies []*faultproxy.Proxy
		clients []*redis.Client
	)
	for i := 0; i < soakNodes; i++ {
		proxy, err := faultproxy.New(e.addr)
		require.NoError(t, err)
		proxies = append(proxies, proxy)
		t.Cleanup(func() { _ = proxy.Close() })
		rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DialTimeout: 500 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
		clients = append(clients, rdb)
		reg, err := streamcancel.NewRegistry(rdb,
			streamcancel.WithKeyPrefix(e.prefix), streamcancel.WithNodeID(fmt.Sprintf("node-%d", i)),
			streamcancel.WithPollInterval(soakPoll), streamcancel.WithTTL(soakTTL))
		require.NoError(t, err)
		regs = append(regs, reg)
		// The soak closes these itself; the cleanups cover a test that
		// stops early. Close of either is safe to repeat.
		t.Cleanup(func() { _ = reg.Close(); _ = rdb.Close() })
	}

	faults := &faultStats{counts: map[string]int{}}
	stopFaults := make(chan struct{})
	var stopOnce sync.Once
	endFaults := func() { stopOnce.Do(func() { close(stopFaults) }) }
	t.Cleanup(endFaults)
	var faultWG sync.WaitGroup
	for i, proxy := range proxies {
		faultWG.Add(1)
		go func(proxy *faultproxy.Proxy, rng *rand.Rand) {
			defer faultWG.Done()
			injectFaults(proxy, rng, faults, stopFaults)
		}(proxy, rand.New(rand.NewSource(seed+int64(i)+1)))
	}

	rng := rand.New(rand.NewSource(seed))
	all := make([]*soakRun, 0, runs)
	var (
		wg                                        sync.WaitGroup
		startErrors, cancels, found, cancelErrors atomic.Int64
	)
	gap := duration / time.Duration(runs)
	began := time.Now()
	for i := 0; i < runs; i++ {
		time.Sleep(time.Until(began.Add(time.Duration(i) * gap)))

		r := &soakRun{id: fmt.Sprintf("soak-%d", i), done: make(chan struct{})}
		reg := regs[rng.Intn(soakNodes)]
		chk, err := reg.Start(ctx, r.id)
		if err != nil {
			// Unique IDs never conflict, so only a context or a closed
			// registry could fail Start, and neither happens here.
			startErrors.Add(1)
			t.Errorf("Start(%q): %v", r.id, err)
			continue
		}
		r.chk = chk
		all = append(all, r)

		lifetime := time.Duration(500+rng.Intn(2500)) * time.Millisecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(r.done)
			end := time.Now().Add(lifetime)
			for {
				if chk.Cancelled() {
					r.mu.Lock()
					r.stoppedAt = time.Now()
					r.cause = context.Cause(chk.Context())
					r.mu.Unlock()
					return
				}
				if time.Now().After(end) && r.finish() {
					_ = chk.Close() // may fail during a fault; the marker then expires
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()

		if rng.Float64() < soakCancelShare {
			canceler := regs[rng.Intn(soakNodes)]
			delay := time.Duration(rng.Int63n(int64(lifetime)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(delay)
				sent, res, err := r.cancel(canceler)
				switch {
				case !sent:
				case err != nil:
					cancels.Add(1)
					cancelErrors.Add(1)
				case res.Found:
					cancels.Add(1)
					found.Add(1)
				default:
					cancels.Add(1)
				}
			}()
		}
	}

	endFaults()
	faultWG.Wait()
	healedAt := time.Now()

	// Every run either ends by itself or is canceled; a run whose cancel
	// was found must stop within a few seconds once the proxies are
	// healthy.
	waitAll := make(chan struct{})
	go func() {
		wg.Wait()
		close(waitAll)
	}()
	select {
	case <-waitAll:
	case <-time.After(soakPoll + 5*time.Second):
	}

	var falseCancels, undelivered, canceledRuns int
	var latencies []time.Duration
	for _, r := range all {
		r.mu.Lock()
		switch {
		case !r.foundAt.IsZero() && r.stoppedAt.IsZero():
			undelivered++
			t.Errorf("run %q: its cancel was found at %v but it still runs %v after the faults ended",
				r.id, r.foundAt.Format("15:04:05.000"), time.Since(healedAt))
		case r.stoppedAt.IsZero():
		case !r.cancelSent:
			canceledRuns++
			falseCancels++
			t.Errorf("run %q stopped without a cancel; cause %v", r.id, r.cause)
		default:
			canceledRuns++
			assert.ErrorIs(t, r.cause, streamcancel.ErrCanceled, "cause of run %q", r.id)
			if !r.foundAt.IsZero() && r.stoppedAt.After(r.foundAt) {
				latencies = append(latencies, r.stoppedAt.Sub(r.foundAt))
			}
		}
		r.mu.Unlock()
	}

	var subscriptions, pushes, syncErrors uint64
	for _, reg := range regs {
		s := reg.Stats()
		subscriptions += s.Subscriptions
		pushes += s.PushesReceived
		syncErrors += s.SyncErrors
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	percentile := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(p*float64(len(latencies)-1))]
	}
	t.Logf("runs %d, cancels sent %d, found %d, failed %d; runs stopped by a cancel %d; false cancels %d; undelivered found cancels %d",
		len(all), cancels.Load(), found.Load(), cancelErrors.Load(), canceledRuns, falseCancels, undelivered)
	t.Logf("stop after a found cancel: p50 %v, p99 %v, max %v over %d runs; subscriptions %d, pushes received %d, sync errors %d",
		percentile(0.5), percentile(0.99), percentile(1), len(latencies), subscriptions, pushes, syncErrors)
	t.Logf("faults: %s", faults)

	assert.Zero(t, falseCancels, "runs stopped without a cancel")
	assert.Zero(t, undelivered, "found cancels not delivered")
	assert.Positive(t, found.Load(), "cancels found")

	for _, r := range all {
		_ = r.chk.Close()
	}
	<-waitAll
	for i := range regs {
		_ = regs[i].Close()
		_ = clients[i].Close()
		_ = proxies[i].Close()
	}

	// Markers whose release failed during a fault expire after the TTL.
	require.Eventually(t, func() bool { return len(e.keys(t, admin)) == 0 }, soakTTL+time.Second, 50*time.Millisecond,
		"keys left under the prefix")
	require.Eventually(t, func() bool {
		list, err := admin.ClientList(ctx).Result()
		return err == nil && strings.Count(list, "\n") == 1
	}, 2*time.Second, 20*time.Millisecond, "connections besides the test's own")
	goroutines := runtime.NumGoroutine()
	for deadline := time.Now().Add(3 * time.Second); goroutines > baseline && time.Now().Before(deadline); goroutines = runtime.NumGoroutine() {
		time.Sleep(20 * time.Millisecond)
	}
	assert.LessOrEqual(t, goroutines, baseline, "goroutines after every registry closed")
	assert.Zero(t, startErrors.Load())
}
