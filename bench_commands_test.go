package streamcancel_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamcancel/streamcancel"
)

// BenchmarkCommandsPerStream counts the Redis commands one stream costs,
// from INFO commandstats on a server of its own. One op is one stream
// from Start to Close, its chunks sent without pause. The polling designs
// cost three lifecycle commands (see existsStream) plus their EXISTS
// checks. streamcancel costs its Start and Close scripts. While the run
// lives it also costs a share of the registry's probe PUBLISH per
// PollInterval and one lease refresh per TTL/3, which the registry sends
// for all its runs in one pipeline.
//
// The paced cases make every stream last about 10 PollIntervals, with
// PollInterval 10ms and TTL 300ms, so that a stream meets the polls and
// the refresh that a 10-second stream meets with the default 1s and 30s. Their
// streams run 50 at a time, so that the probes and pipelines are shared as
// they are on a busy node. The reads case runs on a client that the
// registry cannot probe through, so every PollInterval reads all runs, as
// on Redis Cluster.
func BenchmarkCommandsPerStream(b *testing.B) {
	srv, admin := benchServer(b)
	hook := newRoundTrips()
	reg := benchRegistry(b, benchClient(b, srv.Addr(), hook), "node-a")
	ctx := context.Background()
	runs := 0

	for _, chunks := range []int{50, 500, 5000} {
		b.Run(fmt.Sprintf("streamcancel/chunks=%d", chunks), func(b *testing.B) {
			countCommands(b, admin, hook, func() {
				for i := 0; i < b.N; i++ {
					runs++
					if err := streamChunks(ctx, reg, "commands-"+strconv.Itoa(runs), chunks, 0, 0); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}

	for _, pacing := range []struct {
		name string
		wrap func(*redis.Client) redis.UniversalClient
	}{
		{"paced", func(c *redis.Client) redis.UniversalClient { return c }},
		{"paced/reads", func(c *redis.Client) redis.UniversalClient { return otherClient{c} }},
	} {
		b.Run("streamcancel/chunks=500/"+pacing.name, func(b *testing.B) {
			benchPaced(b, srv.Addr(), admin, pacing.wrap, &runs)
		})
	}

	for _, design := range []struct {
		name  string
		every int
	}{{"every-10-EXISTS", 10}, {"per-chunk-EXISTS", 1}} {
		// 5000 chunks with EXISTS are left out to keep the run short;
		// the count grows linearly from 50 to 500 already.
		for _, chunks := range []int{50, 500} {
			b.Run(fmt.Sprintf("%s/chunks=%d", design.name, chunks), func(b *testing.B) {
				hook := newRoundTrips()
				rdb := benchClient(b, srv.Addr(), hook)
				countCommands(b, admin, hook, func() {
					for i := 0; i < b.N; i++ {
						runs++
						s, err := startExistsStream(ctx, rdb, "commands-"+strconv.Itoa(runs), design.every)
						if err != nil {
							b.Fatal(err)
						}
						for c := 0; c < chunks; c++ {
							if s.Cancelled(ctx) {
								b.Fatalf("check = true at chunk %d, want false", c)
							}
						}
						if err := s.Close(ctx); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}

// benchPaced runs b.N streams of 500 chunks on a registry of its own with
// PollInterval 10ms and TTL 300ms, 50 at a time, each pausing for one
// PollInterval after every 50 chunks, and counts their commands. wrap
// gives the registry its client; runs numbers the streams.
func benchPaced(b *testing.B, addr string, admin *redis.Client, wrap func(*redis.Client) redis.UniversalClient, runs *int) {
	const poll, concurrent = 10 * time.Millisecond, 50
	ctx := context.Background()
	hook := newRoundTrips()
	reg := benchRegistry(b, wrap(benchClient(b, addr, hook)), "node-paced",
		streamcancel.WithPollInterval(poll), streamcancel.WithTTL(300*time.Millisecond))

	var took time.Duration
	countCommands(b, admin, hook, func() {
		start := time.Now()
		errs := make(chan error, b.N)
		var wg sync.WaitGroup
		for i := 0; i < b.N; i += concurrent {
			for j := i; j < min(i+concurrent, b.N); j++ {
				*runs++
				wg.Add(1)
				go func(id string) {
					defer wg.Done()
					errs <- streamChunks(ctx, reg, id, 500, 50, poll)
				}("paced-" + strconv.Itoa(*runs))
			}
			wg.Wait()
		}
		took = time.Since(start)
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.ReportMetric(float64(took)/float64(time.Millisecond)/float64((b.N+concurrent-1)/concurrent), "stream-ms")
}

// countCommands runs streams, which runs b.N streams, and reports per
// stream: the commands clients sent and the calls the server ran, script
// calls included, both from INFO commandstats, and the round trips that
// hook counted.
func countCommands(b *testing.B, admin *redis.Client, hook *roundTrips, streams func()) {
	b.Helper()
	trips, publishes := hook.single.Load()+hook.pipelines.Load(), hook.publishes.Load()
	resetCommandStats(b, admin)
	b.ResetTimer()

	streams()

	b.StopTimer()
	calls := commandCalls(b, admin)

	// The subscriber's PINGs after a quiet time go over the Pub/Sub
	// connection, which go-redis hooks do not see, and each is a round trip
	// of its own. INFO
	// commandstats counts the probes' PUBLISH commands with those that
	// scripts run, which sentCommands leaves out.
	trips = hook.single.Load() + hook.pipelines.Load() - trips + calls["ping"]
	sent := sentCommands(calls) + hook.publishes.Load() - publishes
	b.ReportMetric(float64(sent)/float64(b.N), "cmds/stream")
	b.ReportMetric(float64(totalCalls(calls))/float64(b.N), "calls/stream")
	b.ReportMetric(float64(trips)/float64(b.N), "round-trips/stream")
}

// streamChunks runs one stream of id on reg: Start, chunks checks of
// Cancelled and Close. When pauseEvery is not 0, the stream sleeps for
// pause after every pauseEvery chunks.
func streamChunks(ctx context.Context, reg *streamcancel.Registry, id string, chunks, pauseEvery int, pause time.Duration) error {
	chk, err := reg.Start(ctx, id)
	if err != nil {
		return fmt.Errorf("start %q: %w", id, err)
	}
	for c := 0; c < chunks; c++ {
		if chk.Cancelled() {
			_ = chk.Close()
			return fmt.Errorf("Cancelled() of %q = true at chunk %d, want false", id, c)
		}
		if pauseEvery > 0 && c%pauseEvery == pauseEvery-1 {
			time.Sleep(pause)
		}
	}
	if err := chk.Close(); err != nil {
		return fmt.Errorf("close %q: %w", id, err)
	}
	return nil
}
