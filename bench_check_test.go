package streamcancel_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
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

// BenchmarkSlowRedis measures a stream loop's throughput while every Redis
// reply is delayed by 500 ms. One op is one chunk: the cancel check plus
// chunkWork. Replies go through a fault proxy in every case.
//
// The streamcancel case switches the delay on and off in twelve blocks of
// b.N/12 chunks, in the order on, off, off, on, on, off and so on, so that
// both halves share the machine's load and a steady drift in it cancels
// out. It reports ns/chunk for each half and the slowdown in percent. An
// untimed warm-up runs first. Its run starts while the delay is on, and
// start-ms and close-ms are how long Start and Close took then.
func BenchmarkSlowRedis(b *testing.B) {
	srv, _ := benchServer(b)
	proxy := benchProxy(b, srv.Addr())
	rdb := benchClient(b, proxy.Addr())
	reg := benchRegistry(b, rdb, "node-a")
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
		for i := 0; i < min(b.N, 100000); i++ {
			if chk.Cancelled() {
				b.Fatalf("Cancelled() = true at warm-up chunk %d, want false", i)
			}
			work.do(i)
		}

		var took [2]time.Duration // without and with the delay
		var chunks [2]int
		const blocks = 12
		b.ResetTimer()
		for block := 0; block < blocks; block++ {
			delayed := block%4 == 0 || block%4 == 3
			if delayed {
				proxy.SetDelay(slowDelay)
			} else {
				proxy.SetDelay(0)
			}

			half := 0
			if delayed {
				half = 1
			}
			blockStart := time.Now()
			first, end := block*b.N/blocks, (block+1)*b.N/blocks
			for i := first; i < end; i++ {
				if chk.Cancelled() {
					b.Fatalf("Cancelled() = true at chunk %d, want false", i)
				}
				work.do(i)
			}
			took[half] += time.Since(blockStart)
			chunks[half] += end - first
		}
		b.StopTimer()

		// Close waits at most 500ms; an error only means the marker
		// expires after the TTL.
		proxy.SetDelay(slowDelay)
		closeStart := time.Now()
		_ = chk.Close()
		closeTook := time.Since(closeStart)

		if chunks[0] == 0 || chunks[1] == 0 {
			// b.N is below the number of blocks, as in the first run.
			return
		}
		direct, delayed := float64(took[0])/float64(chunks[0]), float64(took[1])/float64(chunks[1])
		b.ReportMetric(direct, "direct-ns/chunk")
		b.ReportMetric(delayed, "delayed-ns/chunk")
		b.ReportMetric((delayed-direct)/direct*100, "slowdown-%")
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
