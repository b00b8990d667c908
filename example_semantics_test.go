package streamcancel_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamcancel/streamcancel"
)

// A Stop that must confirm the end: node-b cancels node-a's run and
// waits until node-a's loop has closed its Checker.
func ExampleRegistry_CancelAndWait() {
	mr, err := miniredis.Run()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	nodeA, err := streamcancel.NewRegistry(rdb, streamcancel.WithNodeID("node-a"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nodeA.Close()
	nodeB, err := streamcancel.NewRegistry(rdb, streamcancel.WithNodeID("node-b"))
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
	go func() {
		// The streaming loop on node-a ends when its context does, and
		// then closes its Checker.
		<-chk.Context().Done()
		_ = chk.Close()
	}()

	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := nodeB.CancelAndWait(waitCtx, "chat-42")
	if err != nil {
		// errors.Is(err, context.DeadlineExceeded): the loop is still going.
		fmt.Println(err)
		return
	}
	fmt.Println("found:", res.Found, "on", res.NodeID)
	fmt.Println("ended within 5s:", res.StopDuration < 5*time.Second)

	// Output:
	// found: true on node-a
	// ended within 5s: true
}

// A Stop pressed before the stream registered is kept for the next Start.
func ExampleWithPendingCancel() {
	mr, err := miniredis.Run()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	reg, err := streamcancel.NewRegistry(rdb, streamcancel.WithPendingCancel(10*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Close()

	ctx := context.Background()
	res, err := reg.Cancel(ctx, "chat-9")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("found:", res.Found, "pending:", res.Pending)

	chk, err := reg.Start(ctx, "chat-9")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer chk.Close()
	fmt.Println("canceled before the first chunk:", chk.Cancelled())

	// Output:
	// found: false pending: true
	// canceled before the first chunk: true
}

// Every run of a conversation joins its group, and one call stops them
// all, on whatever nodes they run.
func ExampleRegistry_CancelGroup() {
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
	for _, streamID := range []string{"answer-1", "title-1"} {
		chk, err := reg.Start(ctx, streamID, streamcancel.WithGroup("conversation-7"))
		if err != nil {
			fmt.Println(err)
			return
		}
		defer chk.Close()
	}

	n, err := reg.CancelGroup(ctx, "conversation-7")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("runs canceled:", n)

	// Output:
	// runs canceled: 2
}

// A retry of the same stream replaces the run that is still going, and
// the old run learns why it stopped.
func ExampleWithTakeover() {
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
	old, err := reg.Start(ctx, "chat-5")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer old.Close()

	_, err = reg.Start(ctx, "chat-5")
	fmt.Println("second Start:", errors.Is(err, streamcancel.ErrAlreadyActive))

	next, err := reg.Start(ctx, "chat-5", streamcancel.WithTakeover())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer next.Close()
	fmt.Println("old run taken over:", errors.Is(old.Err(), streamcancel.ErrTakenOver))
	fmt.Println(old.Err())
	fmt.Println("new run active:", !next.Cancelled())

	// Output:
	// second Start: true
	// old run taken over: true
	// streamcancel: stream canceled: taken over by a run on node "node-a"
	// new run active: true
}

// A reason travels with the cancel, and the loop reads it from the cause.
func ExampleWithReason() {
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
	chk, err := reg.Start(ctx, "chat-3")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer chk.Close()

	if _, err := reg.Cancel(ctx, "chat-3", streamcancel.WithReason("user pressed Stop")); err != nil {
		fmt.Println(err)
		return
	}

	var ce *streamcancel.CancelError
	if errors.As(context.Cause(chk.Context()), &ce) {
		fmt.Println("reason:", ce.Reason)
	}
	fmt.Println("matches ErrCanceled:", errors.Is(chk.Err(), streamcancel.ErrCanceled))
	fmt.Println("matches context.Canceled:", errors.Is(chk.Err(), context.Canceled))

	// Output:
	// reason: user pressed Stop
	// matches ErrCanceled: true
	// matches context.Canceled: true
}
