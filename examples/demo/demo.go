package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamcancel/streamcancel"
)

// demoStreamID is the stream that node-a runs and node-b cancels.
const demoStreamID = "demo-stream"

const (
	// probeTimeout bounds the PING that checks that a given Redis is
	// reachable.
	probeTimeout = 2 * time.Second

	// subscribeTimeout bounds the wait for both registries to subscribe
	// to their cancel channels.
	subscribeTimeout = 2 * time.Second

	// tokensPerLine is how many streamed tokens the output shows per line.
	tokensPerLine = 12
)

// node is one simulated service node: a go-redis client with a command
// counter and the registry that uses it.
type node struct {
	name    string
	client  *redis.Client
	counter *commandCounter
	reg     *streamcancel.Registry
}

// run performs one demo: node-a streams tokens, node-b cancels the stream,
// and run writes what happened and what it cost to out. It returns an
// error when Redis is unreachable, when the cancel fails or does not find
// the run, or when node-a's loop does not stop within cfg.StopTimeout.
func run(ctx context.Context, cfg config, out io.Writer) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "streamcancel-demo-" + randomHex(8)
	}

	addr, server, err := openRedis(ctx, cfg.RedisAddr)
	if err != nil {
		return err
	}
	if server != nil {
		defer server.Close()
		fmt.Fprintf(out, "Redis: embedded miniredis at %s\n", addr)
	} else {
		fmt.Fprintf(out, "Redis: %s\n", addr)
	}
	fmt.Fprintf(out, "Key prefix: %s, poll interval %v\n", cfg.KeyPrefix, cfg.PollInterval)

	a, err := startNode("node-a", addr, cfg)
	if err != nil {
		return err
	}
	b, err := startNode("node-b", addr, cfg)
	if err != nil {
		return errors.Join(err, a.close())
	}

	streamErr := streamAndCancel(ctx, cfg, a, b, out)

	// Close before counting, so that the count includes the release of
	// the run's marker.
	closeErr := errors.Join(a.close(), b.close())
	printCommandCounts(out, server, a, b)
	return errors.Join(streamErr, closeErr)
}

// openRedis returns the address of the Redis to use. For an empty addr it
// starts an embedded miniredis, which the caller must close. For a given
// addr it sends a PING to check that Redis is reachable.
func openRedis(ctx context.Context, addr string) (string, *miniredis.Miniredis, error) {
	if addr == "" {
		server, err := miniredis.Run()
		if err != nil {
			return "", nil, fmt.Errorf("starting the embedded miniredis failed: %w", err)
		}
		return server.Addr(), server, nil
	}

	// The probe uses its own client, so that the counted clients carry
	// only the registries' traffic.
	probe := redis.NewClient(&redis.Options{Addr: addr})
	defer probe.Close()

	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if err := probe.Ping(ctx).Err(); err != nil {
		return "", nil, fmt.Errorf("Redis at %s is unreachable: %w; start it, fix -redis or REDIS_ADDR, or set neither to use the embedded miniredis", addr, err)
	}
	return addr, nil, nil
}

// startNode creates a client with a command counter and a registry for
// the node called name.
func startNode(name, addr string, cfg config) (*node, error) {
	client := redis.NewClient(&redis.Options{Addr: addr})
	counter := newCommandCounter()
	client.AddHook(counter)

	opts := []streamcancel.Option{
		streamcancel.WithNodeID(name),
		streamcancel.WithKeyPrefix(cfg.KeyPrefix),
		streamcancel.WithPollInterval(cfg.PollInterval),
	}
	if cfg.Logger != nil {
		opts = append(opts, streamcancel.WithLogger(cfg.Logger))
	}
	reg, err := streamcancel.NewRegistry(client, opts...)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &node{name: name, client: client, counter: counter, reg: reg}, nil
}

// close closes the node's registry, then its client.
func (n *node) close() error {
	var errs []error
	if err := n.reg.Close(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", n.name, err))
	}
	if err := n.client.Close(); err != nil {
		errs = append(errs, fmt.Errorf("%s: closing the Redis client failed: %w", n.name, err))
	}
	return errors.Join(errs...)
}

// streamResult is the outcome of node-a's streaming loop.
type streamResult struct {
	delivered int
	// stoppedAt is when the loop saw Cancelled return true. It is zero
	// when the loop sent every token.
	stoppedAt time.Time
}

// streamTokens is node-a's streaming loop. It sends words to out, one per
// interval, until Cancelled returns true or no words are left. It closes
// reached once it has sent cancelAfter tokens, unless cancelAfter is 0.
func streamTokens(chk *streamcancel.Checker, words []string, interval time.Duration, cancelAfter int, reached chan<- struct{}, out io.Writer) streamResult {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	var res streamResult
	fmt.Fprint(out, "  ")
	for i := 0; ; i++ {
		if chk.Cancelled() {
			res.stoppedAt = time.Now()
			fmt.Fprint(out, "[stopped]")
			break
		}
		if i == len(words) {
			break
		}
		if i > 0 && i%tokensPerLine == 0 {
			fmt.Fprint(out, "\n  ")
		}
		fmt.Fprint(out, words[i], " ")
		res.delivered++
		if res.delivered == cancelAfter {
			close(reached)
		}

		// The next token takes one interval to produce, unless the run
		// ends first.
		select {
		case <-chk.Context().Done():
		case <-ticker.C:
		}
	}
	fmt.Fprintln(out)
	return res
}

// cancelReport is the outcome of node-b's cancel, with the times node-a
// took to stop, measured from just before node-b called Cancel.
type cancelReport struct {
	delivered int
	total     int

	result    streamcancel.CancelResult
	cancelErr error
	returned  time.Duration // until Cancel returned

	contextDone time.Duration // until node-a's Checker context was done, or 0
	loopStopped time.Duration // until node-a's loop stopped, or 0

	// timedOut is true when the loop had not stopped after StopTimeout.
	timedOut bool
	// completed is true when the loop sent every token.
	completed bool

	cause error
}

// streamAndCancel runs the stream of demoStreamID on node a, cancels it
// from node b and writes the report to out.
func streamAndCancel(ctx context.Context, cfg config, a, b *node, out io.Writer) (err error) {
	if waitSubscribed(ctx, subscribeTimeout, a.reg, b.reg) {
		fmt.Fprintf(out, "%s and %s are subscribed to their cancel channels.\n", a.name, b.name)
	} else {
		fmt.Fprintf(out, "Pub/Sub is not ready after %v; the cancel has to arrive through the poll.\n", subscribeTimeout)
	}

	chk, err := a.reg.Start(ctx, demoStreamID)
	if err != nil {
		return fmt.Errorf("%s: %w", a.name, err)
	}
	defer func() {
		if cerr := chk.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: %w", a.name, cerr))
		}
	}()
	if a.reg.Stats().UnregisteredRuns > 0 {
		return fmt.Errorf("%s could not register the run of %q in Redis within the 500ms that Start waits, so a cancel from %s would not find it; check the Redis latency", a.name, demoStreamID, b.name)
	}

	// contextDone receives the time at which the run's context ended, by
	// the cancel, by ctx or by chk.Close.
	contextDone := make(chan time.Time, 1)
	go func() {
		<-chk.Context().Done()
		contextDone <- time.Now()
	}()

	words := tokens()
	cancelAfter := cfg.CancelAfterTokens
	trigger := fmt.Sprintf("after %d tokens", cancelAfter)
	if cfg.CancelDelay > 0 {
		cancelAfter = 0
		trigger = fmt.Sprintf("%v after the start", cfg.CancelDelay)
	}
	fmt.Fprintf(out, "%s streams %q, one token every %v; %s cancels it %s:\n", a.name, demoStreamID, cfg.TokenInterval, b.name, trigger)

	// Only the stream goroutine writes to out until streamDone delivers.
	reached := make(chan struct{})
	streamDone := make(chan streamResult, 1)
	go func() {
		streamDone <- streamTokens(chk, words, cfg.TokenInterval, cancelAfter, reached, out)
	}()

	var delay <-chan time.Time
	if cfg.CancelDelay > 0 {
		timer := time.NewTimer(cfg.CancelDelay)
		defer timer.Stop()
		delay = timer.C
	}
	select {
	case <-reached:
	case <-delay:
	case res := <-streamDone:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s sent all %d tokens before %s canceled; use a smaller -tokens or -delay", a.name, res.delivered, b.name)
	}

	rep := cancelAndWait(ctx, cfg, b, chk, streamDone, contextDone)
	rep.total = len(words)
	printCancelReport(out, a, b, rep)

	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case rep.cancelErr != nil:
		return fmt.Errorf("%s: %w", b.name, rep.cancelErr)
	case !rep.result.Found:
		return fmt.Errorf("%s's Cancel did not find the active run of %q that %s had started", b.name, demoStreamID, a.name)
	case rep.timedOut:
		return fmt.Errorf("%s's loop did not stop within %v of %s's Cancel (-timeout)", a.name, cfg.StopTimeout, b.name)
	case rep.completed:
		return fmt.Errorf("%s sent all %d tokens; the cancel did not stop its loop before the stream ended", a.name, rep.delivered)
	case !errors.Is(rep.cause, streamcancel.ErrCanceled):
		return fmt.Errorf("the cause of %s's run context is %v, which does not match streamcancel.ErrCanceled", a.name, rep.cause)
	}
	return nil
}

// cancelAndWait calls Cancel on node b and waits for node-a's loop to
// stop, at most cfg.StopTimeout from just before the call. When the loop
// has not stopped by then, it closes chk to end the loop.
func cancelAndWait(ctx context.Context, cfg config, b *node, chk *streamcancel.Checker, streamDone <-chan streamResult, contextDone <-chan time.Time) cancelReport {
	var rep cancelReport

	start := time.Now()
	cancelCtx, cancel := context.WithTimeout(ctx, cfg.StopTimeout)
	rep.result, rep.cancelErr = b.reg.Cancel(cancelCtx, demoStreamID)
	cancel()
	rep.returned = time.Since(start)

	deadline := time.NewTimer(cfg.StopTimeout - time.Since(start))
	defer deadline.Stop()
	var res streamResult
	select {
	case res = <-streamDone:
	case <-deadline.C:
		rep.timedOut = true
		_ = chk.Close()
		res = <-streamDone
	}
	rep.delivered = res.delivered
	rep.completed = res.stoppedAt.IsZero()
	rep.cause = context.Cause(chk.Context())

	if !rep.timedOut && !rep.completed {
		rep.loopStopped = res.stoppedAt.Sub(start)
		select {
		case t := <-contextDone:
			rep.contextDone = t.Sub(start)
		case <-deadline.C:
		}
	}
	return rep
}

// waitSubscribed waits at most timeout until every registry is subscribed
// to its cancel channel, and reports whether they all are.
func waitSubscribed(ctx context.Context, timeout time.Duration, regs ...*streamcancel.Registry) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for {
		ready := true
		for _, reg := range regs {
			ready = ready && reg.Stats().Subscribed
		}
		if ready {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-ticker.C:
		}
	}
}

func printCancelReport(out io.Writer, a, b *node, rep cancelReport) {
	fmt.Fprintln(out, "Result:")
	fmt.Fprintf(out, "  tokens delivered:  %d of %d\n", rep.delivered, rep.total)
	fmt.Fprintf(out, "  %s Cancel:     found=%t node=%q pushed=%t, returned after %v\n",
		b.name, rep.result.Found, rep.result.NodeID, rep.result.Pushed, roundDuration(rep.returned))
	fmt.Fprintf(out, "  cancel latency:    %s's loop stopped after %s; a watcher goroutine saw its context done after %s\n",
		a.name, formatLatency(rep.loopStopped), formatLatency(rep.contextDone))
	fmt.Fprintf(out, "  cause:             %v (matches ErrCanceled: %t)\n",
		rep.cause, errors.Is(rep.cause, streamcancel.ErrCanceled))
}

func printCommandCounts(out io.Writer, server *miniredis.Miniredis, nodes ...*node) {
	fmt.Fprintln(out, "Redis commands sent through the two clients, counted by a go-redis hook:")
	total, noScript, publishes := 0, 0, 0
	for _, n := range nodes {
		s := n.counter.snapshot()
		total += s.total
		noScript += s.noScript
		for _, cc := range s.commands {
			if cc.name == "PUBLISH" {
				publishes += cc.count
			}
		}
		fmt.Fprintf(out, "  %s  %3d: %v\n", n.name, s.total, s)
	}
	fmt.Fprintf(out, "  total   %3d\n", total)
	if noScript > 0 {
		fmt.Fprintln(out, "  NOSCRIPT: Redis did not have that script cached yet, so go-redis sent EVAL.")
	}
	if publishes > 0 {
		fmt.Fprintln(out, "  PUBLISH: the registry's probe, once per PollInterval while it has runs;")
		fmt.Fprintln(out, "  its arrival on the node's own channel shows that no cancel push was lost.")
	}
	fmt.Fprintln(out, "  Not counted: HELLO on each new connection, and SUBSCRIBE and PING on")
	fmt.Fprintln(out, "  the Pub/Sub connections, because go-redis sends them without the hooks.")
	if server != nil {
		fmt.Fprintf(out, "  miniredis counted %d commands: those, plus the ones the Lua scripts ran.\n", server.CommandCount())
	}
}

// formatLatency formats a measured latency, where 0 means not measured.
func formatLatency(d time.Duration) string {
	if d == 0 {
		return "(not measured)"
	}
	return roundDuration(d).String()
}

func roundDuration(d time.Duration) time.Duration {
	return d.Round(time.Microsecond)
}

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("demo: reading random bytes: " + err.Error())
	}
	return hex.EncodeToString(b)
}
