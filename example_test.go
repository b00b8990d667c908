package streamcancel_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamcancel/streamcancel"
)

// Two nodes share one Redis. node-a streams, a user presses Stop, the
// request lands on node-b, and node-a's loop ends.
func Example() {
	mr, err := miniredis.Run()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mr.Close()

	rdbA := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdbA.Close()
	rdbB := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdbB.Close()

	nodeA, err := streamcancel.NewRegistry(rdbA, streamcancel.WithNodeID("node-a"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nodeA.Close()
	nodeB, err := streamcancel.NewRegistry(rdbB, streamcancel.WithNodeID("node-b"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nodeB.Close()

	ctx := context.Background()
	chk, err := nodeA.Start(ctx, "chat-42")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer chk.Close()

	// The streaming loop on node-a sends a token every 10ms until the run
	// ends.
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		ticker := time.NewTicker(10 * time.Millisecond)
		defer ticker.Stop()
		for !chk.Cancelled() {
			select {
			case <-chk.Context().Done():
			case <-ticker.C:
				// Send the next token to the client here.
			}
		}
	}()

	res, err := nodeB.Cancel(ctx, "chat-42")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("found:", res.Found, "on", res.NodeID)

	select {
	case <-stopped:
		fmt.Println("loop ended")
	case <-time.After(5 * time.Second):
		fmt.Println("the loop did not end within 5s")
		return
	}
	fmt.Println("canceled:", errors.Is(context.Cause(chk.Context()), streamcancel.ErrCanceled))

	// Output:
	// found: true on node-a
	// loop ended
	// canceled: true
}

func ExampleRegistry_Cancel() {
	mr, err := miniredis.Run()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	reg, err := streamcancel.NewRegistry(rdb, streamcancel.WithNodeID("node-a"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()

	ctx := context.Background()

	// Without an active run, Cancel finds nothing and stores nothing.
	res, err := reg.Cancel(ctx, "chat-7")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("before Start: found", res.Found)

	chk, err := reg.Start(ctx, "chat-7")
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err = reg.Cancel(ctx, "chat-7")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("while running: found", res.Found, "on", res.NodeID)

	// The run was on this registry, so it has already ended.
	fmt.Println("run canceled:", errors.Is(chk.Err(), streamcancel.ErrCanceled))

	if err := chk.Close(); err != nil {
		fmt.Println(err)
		return
	}
	res, err = reg.Cancel(ctx, "chat-7")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("after Close: found", res.Found)

	// Output:
	// before Start: found false
	// while running: found true on node-a
	// run canceled: true
	// after Close: found false
}

func ExampleChecker_Cancelled() {
	mr, err := miniredis.Run()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	reg, err := streamcancel.NewRegistry(rdb)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()

	ctx := context.Background()
	chk, err := reg.Start(ctx, "chat-9")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer chk.Close()

	for i, token := range []string{"Streams", "stop", "when", "asked", "to."} {
		// Cancelled is a local atomic read, cheap enough for every token.
		if chk.Cancelled() {
			fmt.Println("stopped:", chk.Err())
			break
		}
		fmt.Println("send:", token)

		if i == 2 {
			// The user presses Stop. Any node may call Cancel. This
			// registry runs the stream, so the run ends before Cancel
			// returns.
			if _, err := reg.Cancel(ctx, "chat-9"); err != nil {
				fmt.Println(err)
				return
			}
		}
	}

	// Output:
	// send: Streams
	// send: stop
	// send: when
	// stopped: streamcancel: stream canceled
}

func ExampleNewRegistry() {
	mr, err := miniredis.Run()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	reg, err := streamcancel.NewRegistry(rdb,
		// Registries that cancel each other's runs share the key prefix.
		streamcancel.WithKeyPrefix("chat-api"),
		streamcancel.WithNodeID("api-1"),
		// A cancel whose Pub/Sub push is lost arrives within this interval.
		streamcancel.WithPollInterval(500*time.Millisecond),
		// The keys of a crashed node expire after this lease.
		streamcancel.WithTTL(15*time.Second),
		streamcancel.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()
	fmt.Println("node:", reg.NodeID())

	// NewRegistry fails only on invalid options. It does not wait for Redis.
	_, err = streamcancel.NewRegistry(rdb, streamcancel.WithTTL(10*time.Millisecond))
	fmt.Println("invalid option:", errors.Is(err, streamcancel.ErrInvalidOption))
	fmt.Println(err)

	// Output:
	// node: api-1
	// invalid option: true
	// streamcancel: invalid option: WithTTL(10ms): the TTL must be at least 100ms
}
