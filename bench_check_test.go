package streamcancel_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamcancel/streamcancel"
)

// BenchmarkCheck measures the cancel check a streaming loop makes per
// chunk, without any chunk work: Checker.Cancelled against the designs it
// replaces. One op is one chunk, so the EXISTS designs' ns/op is the mean
// over checked and unchecked chunks.
func BenchmarkCheck(b *testing.B) {
	srv, _ := benchServer(b)

	b.Run("local-flag", func(b *testing.B) {
		var canceled atomic.Bool
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if canceled.Load() {
				b.Fatal("the flag is set, want not set")
			}
		}
	})

	b.Run("streamcancel", func(b *testing.B) {
		reg := benchRegistry(b, benchClient(b, srv.Addr()), "node-a")
		benchCancelled(b, reg)
	})

	// While Redis is unreachable the push path is down, so every
	// CheckEvery-th call also queues a poll of the run.
	b.Run("streamcancel-redis-down", func(b *testing.B) {
		reg, err := streamcancel.NewRegistry(benchClient(b, downAddr(b)), streamcancel.WithNodeID("node-a"))
		if err != nil {
			b.Fatalf("NewRegistry: %v", err)
		}
		b.Cleanup(func() { _ = reg.Close() })
		benchCancelled(b, reg)
	})

	b.Run("every-10-EXISTS", func(b *testing.B) {
		benchExists(b, benchClient(b, srv.Addr()), 10)
	})

	b.Run("per-chunk-EXISTS", func(b *testing.B) {
		benchExists(b, benchClient(b, srv.Addr()), 1)
	})

	// miniredis runs in this process, so this is the round trip through
	// go-redis and loopback TCP without a separate server process.
	b.Run("per-chunk-EXISTS-miniredis", func(b *testing.B) {
		m := miniredis.RunT(b)
		benchExists(b, benchClient(b, m.Addr()), 1)
	})
}

// benchCancelled calls Cancelled b.N times on a new run of reg.
func benchCancelled(b *testing.B, reg *streamcancel.Registry) {
	chk, err := reg.Start(context.Background(), "check")
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	b.Cleanup(func() { _ = chk.Close() })

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if chk.Cancelled() {
			b.Fatalf("Cancelled() = true at chunk %d, want false", i)
		}
	}
}

// benchExists runs the EXISTS check b.N times, sending EXISTS on every
// every-th call.
func benchExists(b *testing.B, rdb *redis.Client, every int) {
	ctx := context.Background()
	check := &existsCheck{rdb: rdb, key: "baseline:check:cancel", every: every}

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if check.Cancelled(ctx) {
			b.Fatalf("check = true at chunk %d, want false", i)
		}
	}
}

// slowDelay is how long the fault proxy holds every Redis reply in
// BenchmarkSlowRedis.
const slowDelay = 500 * time.Millisecond

// Blocks of BenchmarkSlowRedis's streamcancel case. Each block lasts
// longer than the delay and than the default PollInterval of 1s, so that
// the registry's periodic poll sends a call during each delayed block and
// the proxy holds its reply. The benchmark fails when a delayed block has
// none.
const (
	slowBlock  = 3 * slowDelay
	slowBlocks = 4

	// slowBatch is how many chunks run between two reads of the clock.
	slowBatch = 1024
)

// BenchmarkSlowRedis measures a stream loop's throughput while every Redis
// reply is delayed by 500 ms. Replies go through a fault proxy in every
// case. In the baseline cases one op is one chunk: the cancel check plus
// chunkWork.
//
// The streamcancel case runs its loop in four blocks of 1.5s each, with
// the delay on, off, off and on, so that both halves share the machine's
// load and a steady drift in it cancels out. Its blocks are timed by the
// clock, not by b.N, so one op is the whole sequence and go test runs it
// once for each -count at -benchtime=1s. It reports ns/chunk for each half,
// the slowdown in percent, and pending-%: the share of the delayed blocks'
// time during which a call of the registry's client waited for its reply.
// It fails when a delayed block had no such call. An untimed warm-up runs
// first. Its run starts while the delay is on, and start-ms and close-ms
// are how long Start and Close took then.
func BenchmarkSlowRedis(b *testing.B) {
	srv, _ := benchServer(b)
	proxy := benchProxy(b, srv.Addr())
	calls := &callSpans{}
	reg := benchRegistry(b, benchClient(b, proxy.Addr(), calls), "node-a")
	rdb := benchClient(b, proxy.Addr())
	ctx := context.Background()
	runs := 0

	b.Run("local-flag", func(b *testing.B) {
		var canceled atomic.Bool
		var work chunkWork
		for i := 0; i < b.N; i++ {
			if canceled.Load() {
				b.Fatal("the flag is set, want not set")
			}
			work.do(i)
		}
	})

	b.Run("streamcancel", func(b *testing.B) {
		proxy.SetDelay(slowDelay)
		defer proxy.SetDelay(0)

		// Start waits at most 500ms for Redis and then fails open.
		runs++
		start := time.Now()
		chk, err := reg.Start(ctx, fmt.Sprintf("slow-%d", runs))
		if err != nil {
			b.Fatalf("Start: %v", err)
		}
		startTook := time.Since(start)

		var work chunkWork
		chunk := 0
		for ; chunk < 100000; chunk++ {
			if chk.Cancelled() {
				b.Fatalf("Cancelled() = true at warm-up chunk %d, want false", chunk)
			}
			work.do(chunk)
		}

		var took [2]time.Duration // without and with the delay
		var chunks [2]int
		var delayedBlocks []timeSpan
		b.ResetTimer()
		for block := 0; block < slowBlocks; block++ {
			half := 0
			if block%4 == 0 || block%4 == 3 {
				half = 1
			}
			if half == 1 {
				proxy.SetDelay(slowDelay)
			} else {
				proxy.SetDelay(0)
			}

			blockStart := time.Now()
			first := chunk
			for time.Since(blockStart) < slowBlock {
				for end := chunk + slowBatch; chunk < end; chunk++ {
					if chk.Cancelled() {
						b.Fatalf("Cancelled() = true at chunk %d, want false", chunk)
					}
					work.do(chunk)
				}
			}
			blockEnd := time.Now()

			took[half] += blockEnd.Sub(blockStart)
			chunks[half] += chunk - first
			if half == 1 {
				delayedBlocks = append(delayedBlocks, timeSpan{blockStart, blockEnd})
			}
		}
		b.StopTimer()

		var pending, delayedTime time.Duration
		for i, block := range delayedBlocks {
			p := calls.pendingWithin(block)
			if p == 0 {
				b.Fatalf("no call of the registry's client waited for a reply during delayed block %d of %v, so the block did not test a slow Redis", i+1, slowBlock)
			}
			pending += p
			delayedTime += block.end.Sub(block.start)
		}

		// Close waits at most 500ms; an error only means the marker
		// expires after the TTL.
		proxy.SetDelay(slowDelay)
		closeStart := time.Now()
		_ = chk.Close()
		closeTook := time.Since(closeStart)

		direct, delayed := float64(took[0])/float64(chunks[0]), float64(took[1])/float64(chunks[1])
		b.ReportMetric(direct, "direct-ns/chunk")
		b.ReportMetric(delayed, "delayed-ns/chunk")
		b.ReportMetric((delayed-direct)/direct*100, "slowdown-%")
		b.ReportMetric(float64(pending)/float64(delayedTime)*100, "pending-%")
		b.ReportMetric(float64(startTook)/float64(time.Millisecond), "start-ms")
		b.ReportMetric(float64(closeTook)/float64(time.Millisecond), "close-ms")
	})

	for _, delay := range []time.Duration{0, slowDelay} {
		b.Run(fmt.Sprintf("every-10-EXISTS/delay=%v", delay), func(b *testing.B) {
			proxy.SetDelay(delay)
			defer proxy.SetDelay(0)

			check := &existsCheck{rdb: rdb, key: "baseline:slow:cancel", every: 10}
			var work chunkWork
			for i := 0; i < b.N; i++ {
				if check.Cancelled(ctx) {
					b.Fatalf("check = true at chunk %d, want false", i)
				}
				work.do(i)
			}
		})
	}
}

// chunkWork simulates producing and encoding one chunk of a stream: a
// SHA-256 of 1 KiB, under a microsecond of CPU with no allocation.
type chunkWork struct {
	buf [1024]byte
	sum [sha256.Size]byte
}

func (w *chunkWork) do(i int) {
	binary.LittleEndian.PutUint64(w.buf[:8], uint64(i))
	copy(w.buf[8:], w.sum[:])
	w.sum = sha256.Sum256(w.buf[:])
}

// timeSpan is the time from start to end.
type timeSpan struct {
	start, end time.Time
}

// callSpans is a go-redis hook that records when each command and each
// pipeline was sent and when its reply arrived. It does not see commands
// on Pub/Sub connections, which go-redis v9.0.0 sends without hooks.
type callSpans struct {
	mu    sync.Mutex
	spans []timeSpan // a zero end while the reply is awaited
}

// begin records a call sent now and returns its index.
func (h *callSpans) begin() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.spans = append(h.spans, timeSpan{start: time.Now()})
	return len(h.spans) - 1
}

// finish records that the reply of call i arrived now.
func (h *callSpans) finish(i int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.spans[i].end = time.Now()
}

// pendingWithin returns for how long within window at least one call
// waited for its reply. A call still waiting counts until the window's
// end.
func (h *callSpans) pendingWithin(window timeSpan) time.Duration {
	h.mu.Lock()
	var clipped []timeSpan
	for _, s := range h.spans {
		if s.end.IsZero() || s.end.After(window.end) {
			s.end = window.end
		}
		if s.start.Before(window.start) {
			s.start = window.start
		}
		if s.end.After(s.start) {
			clipped = append(clipped, s)
		}
	}
	h.mu.Unlock()

	sort.Slice(clipped, func(i, j int) bool { return clipped[i].start.Before(clipped[j].start) })
	var total time.Duration
	var covered time.Time // the end of the spans summed so far
	for _, s := range clipped {
		if s.start.Before(covered) {
			s.start = covered
		}
		if s.end.After(s.start) {
			total += s.end.Sub(s.start)
			covered = s.end
		}
	}
	return total
}

func (h *callSpans) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *callSpans) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		i := h.begin()
		defer h.finish(i)
		return next(ctx, cmd)
	}
}

func (h *callSpans) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		i := h.begin()
		defer h.finish(i)
		return next(ctx, cmds)
	}
}
