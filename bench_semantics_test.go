package streamcancel_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamcancel/streamcancel"
	"github.com/streamcancel/streamcancel/internal/redistest"
)

// benchBackends runs fn against a miniredis and the shared real Redis,
// with two registries named node-a and node-b.
func benchBackends(b *testing.B, fn func(b *testing.B, a, w *streamcancel.Registry)) {
	run := func(b *testing.B, addr, prefix string) {
		var regs [2]*streamcancel.Registry
		for i, node := range []string{"node-a", "node-b"} {
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			b.Cleanup(func() { _ = rdb.Close() })
			reg, err := streamcancel.NewRegistry(rdb, streamcancel.WithNodeID(node), streamcancel.WithKeyPrefix(prefix))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = reg.Close() })
			regs[i] = reg
		}
		deadline := time.Now().Add(5 * time.Second)
		for !regs[0].Stats().Subscribed || !regs[1].Stats().Subscribed {
			if time.Now().After(deadline) {
				b.Fatal("subscribers not confirmed within 5s")
			}
			time.Sleep(time.Millisecond)
		}
		fn(b, regs[0], regs[1])
	}

	b.Run("miniredis", func(b *testing.B) {
		m := miniredis.RunT(b)
		run(b, m.Addr(), "scbench")
	})
	b.Run("redis", func(b *testing.B) {
		c := redistest.Shared(b)
		run(b, c.Options().Addr, redistest.UniquePrefix(b))
	})
}

// BenchmarkCancelAndWait measures a CancelAndWait from node-b of a run on
// node-a whose loop closes its Checker as soon as its context ends: a
// cancel, a push each way and two script calls.
func BenchmarkCancelAndWait(b *testing.B) {
	benchBackends(b, func(b *testing.B, a, w *streamcancel.Registry) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			id := fmt.Sprintf("chat-%d", i)
			chk, err := a.Start(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			go func() {
				<-chk.Context().Done()
				_ = chk.Close()
			}()
			b.StartTimer()

			res, err := w.CancelAndWait(ctx, id)
			if err != nil || !res.Found {
				b.Fatalf("CancelAndWait: found %v, error %v", res.Found, err)
			}
		}
	})
}

// BenchmarkCancelGroup measures a CancelGroup from node-b of a group of
// three runs on node-a.
func BenchmarkCancelGroup(b *testing.B) {
	benchBackends(b, func(b *testing.B, a, w *streamcancel.Registry) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			group := fmt.Sprintf("conv-%d", i)
			runs := make([]*streamcancel.Checker, 3)
			for j := range runs {
				chk, err := a.Start(ctx, fmt.Sprintf("%s-%d", group, j), streamcancel.WithGroup(group))
				if err != nil {
					b.Fatal(err)
				}
				runs[j] = chk
			}
			b.StartTimer()

			n, err := w.CancelGroup(ctx, group)
			if err != nil || n != 3 {
				b.Fatalf("CancelGroup: %d runs, error %v", n, err)
			}

			b.StopTimer()
			for _, chk := range runs {
				_ = chk.Close()
			}
			b.StartTimer()
		}
	})
}
