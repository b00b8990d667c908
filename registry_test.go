package streamcancel_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

var ctx = context.Background()

// A Cancel on one node stops a run on another through the Pub/Sub push:
// the poll interval is an hour, so only the push can deliver it, and the
// loop does not call Cancelled at all.
func TestCancelStopsRunOnOtherNode(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a", streamcancel.WithPollInterval(time.Hour))
		b := e.registry(t, "node-b", streamcancel.WithPollInterval(time.Hour))
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		assert.Equal(t, streamcancel.CancelResult{Found: true, NodeID: "node-a", Pushed: true}, res)

		waitDone(t, chk, 2*time.Second)
		assert.True(t, chk.Cancelled())
		assert.ErrorIs(t, context.Cause(chk.Context()), streamcancel.ErrCanceled)
		assert.ErrorIs(t, chk.Err(), streamcancel.ErrCanceled)
		assert.ErrorIs(t, chk.Err(), context.Canceled)
		require.Eventually(t, func() bool { return a.Stats().PushesReceived == 1 }, time.Second, time.Millisecond, "pushes received")
	})
}

// A streams a chunk every 10ms; after 20 chunks B cancels;
// A's loop ends within 100ms.
func TestCancelMidStreamEndsLoopQuickly(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		sent := make(chan int, 1)
		ended := make(chan time.Time, 1)
		go func() {
			n := stream(chk, 10*time.Millisecond, 1000)
			ended <- time.Now()
			sent <- n
		}()

		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		require.True(t, res.Found)

		select {
		case end := <-ended:
			assert.Less(t, end.Sub(start), 100*time.Millisecond, "loop end after cancel")
		case <-time.After(2 * time.Second):
			t.Fatal("loop still running 2s after cancel")
		}
		assert.Less(t, <-sent, 1000)
		assert.ErrorIs(t, context.Cause(chk.Context()), streamcancel.ErrCanceled)
	})
}

// A cancel on the same node stops the run without the Pub/Sub round trip.
func TestCancelOnSameNode(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a", streamcancel.WithPollInterval(time.Hour))

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		res, err := a.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		require.True(t, res.Found)
		assert.True(t, chk.Cancelled(), "Cancelled() right after Cancel returned")
		assert.ErrorIs(t, chk.Err(), streamcancel.ErrCanceled)
	})
}

// When the push is lost, the periodic poll of the stored record stops the
// run within one poll interval. The record is written without a push here.
func TestLostPushFoundByPoll(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		const poll = 50 * time.Millisecond
		a := e.readingRegistry(t, "node-a", streamcancel.WithPollInterval(poll))
		c := e.client(t)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		token, err := c.HGet(ctx, e.runKey("chat-1"), "token").Result()
		require.NoError(t, err)
		require.NoError(t, c.HSet(ctx, e.runKey("chat-1"), "cancel", token).Err())

		waitDone(t, chk, poll+200*time.Millisecond)
		assert.ErrorIs(t, chk.Err(), streamcancel.ErrCanceled)
		assert.Zero(t, a.Stats().PushesReceived)
	})
}

// A record that names another token does not cancel the run.
func TestRecordOfOtherTokenIgnored(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		const poll = 20 * time.Millisecond
		a := e.readingRegistry(t, "node-a", streamcancel.WithPollInterval(poll))
		c := e.client(t)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		require.NoError(t, c.HSet(ctx, e.runKey("chat-1"), "cancel", "0123456789abcdef0123456789abcdef").Err())
		stayActive(t, chk, 10*poll)
	})
}

// A cancel of a stream with no active run reports Found=false and leaves
// no key, so the next run of the same ID is not canceled.
func TestCancelWithoutRunLeavesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		const poll = 20 * time.Millisecond
		a := e.registry(t, "node-a", streamcancel.WithPollInterval(poll))
		b := e.registry(t, "node-b", streamcancel.WithPollInterval(poll))

		res, err := b.Cancel(ctx, "chat-9")
		require.NoError(t, err)
		assert.Equal(t, streamcancel.CancelResult{}, res)
		assert.Empty(t, e.keys(t, e.client(t)))

		chk, err := a.Start(ctx, "chat-9")
		require.NoError(t, err)
		defer chk.Close()
		stayActive(t, chk, 10*poll)
	})
}

// A cancel affects only the run that was active when Cancel was called:
// the next run of the same ID starts clean.
func TestCancelAffectsOnlyCurrentRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		const poll = 20 * time.Millisecond
		a := e.registry(t, "node-a", streamcancel.WithPollInterval(poll))
		b := e.registry(t, "node-b", streamcancel.WithPollInterval(poll))

		first, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		require.True(t, res.Found)
		waitDone(t, first, time.Second)
		require.NoError(t, first.Close())

		second, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer second.Close()
		stayActive(t, second, 10*poll)
	})
}

// Each run has its own token: a late Close of an old run whose marker was
// lost never deletes the marker of a newer run of the same stream.
func TestCloseDeletesOnlyOwnMarker(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		hook := &commandCounter{}
		rdb := e.client(t)
		rdb.AddHook(hook)
		a := e.registryOn(t, rdb, "node-a", streamcancel.WithPollInterval(time.Hour))
		b := e.registry(t, "node-b", streamcancel.WithPollInterval(time.Hour))
		c := e.client(t)
		waitSubscribed(t, a)

		// After subscribing, node-a loads its 3 scripts and polls its runs
		// once. That poll would register the deleted marker again, so it
		// must be over before the run starts.
		require.Eventually(t, func() bool { return hook.commands.Load() >= 3 }, 5*time.Second, time.Millisecond, "scripts loaded")
		time.Sleep(50 * time.Millisecond)

		old, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)

		// The old run's marker expires, as after a long partition.
		require.NoError(t, c.Del(ctx, e.runKey("chat-1")).Err())
		newer, err := b.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer newer.Close()

		require.NoError(t, old.Close())
		node, err := c.HGet(ctx, e.runKey("chat-1"), "node").Result()
		require.NoError(t, err, "newer run's marker after the old run's Close")
		assert.Equal(t, "node-b", node)
	})
}

// Close of a run removes its marker, and a Cancel afterwards finds nothing.
func TestCheckerCloseRemovesMarker(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		require.Len(t, e.keys(t, e.client(t)), 1)

		require.NoError(t, chk.Close())
		require.NoError(t, chk.Close(), "second Close")
		assert.Empty(t, e.keys(t, e.client(t)))
		assert.True(t, chk.Cancelled(), "Cancelled() after Close")
		assert.ErrorIs(t, chk.Err(), context.Canceled)
		assert.NotErrorIs(t, chk.Err(), streamcancel.ErrCanceled)

		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		assert.False(t, res.Found)
	})
}

// Only one run of a stream ID is active across all nodes. Start on
// another node, or on the same one, returns ErrAlreadyActive and leaves
// the active run untouched.
func TestStartRejectsSecondActiveRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		c := e.client(t)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()
		token, err := c.HGet(ctx, e.runKey("chat-1"), "token").Result()
		require.NoError(t, err)

		_, err = b.Start(ctx, "chat-1")
		require.ErrorIs(t, err, streamcancel.ErrAlreadyActive)
		assert.Contains(t, err.Error(), `"node-a"`)

		_, err = a.Start(ctx, "chat-1")
		require.ErrorIs(t, err, streamcancel.ErrAlreadyActive)

		after, err := c.HGet(ctx, e.runKey("chat-1"), "token").Result()
		require.NoError(t, err)
		assert.Equal(t, token, after, "active run's token")
		assert.False(t, chk.Cancelled())
	})
}

// Of many concurrent Starts of one ID on two nodes, exactly one wins.
func TestConcurrentStartsOneWinner(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		regs := []*streamcancel.Registry{e.registry(t, "node-a"), e.registry(t, "node-b")}

		var (
			mu      sync.Mutex
			winners []*streamcancel.Checker
			others  int
			wg      sync.WaitGroup
		)
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func(r *streamcancel.Registry) {
				defer wg.Done()
				chk, err := r.Start(ctx, "chat-1")
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					winners = append(winners, chk)
					return
				}
				assert.ErrorIs(t, err, streamcancel.ErrAlreadyActive)
				others++
			}(regs[i%2])
		}
		wg.Wait()

		require.Len(t, winners, 1)
		assert.Equal(t, 49, others)
		require.NoError(t, winners[0].Close())
	})
}

// The active marker carries a TTL no longer than the lease, and a run
// longer than the lease keeps its marker and stays cancellable.
func TestLeaseOutlivesTTL(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		const ttl = 300 * time.Millisecond
		a := e.registry(t, "node-a", streamcancel.WithTTL(ttl), streamcancel.WithPollInterval(time.Hour))
		b := e.registry(t, "node-b")
		c := e.client(t)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()

		deadline := time.Now().Add(3 * ttl)
		for time.Now().Before(deadline) {
			pttl, err := c.PTTL(ctx, e.runKey("chat-1")).Result()
			require.NoError(t, err)
			require.Greater(t, pttl, time.Duration(0), "marker PTTL")
			require.LessOrEqual(t, pttl, ttl, "marker PTTL")
			if e.mini != nil {
				// miniredis expires keys only when FastForward moves its clock.
				e.mini.FastForward(20 * time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
		}

		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		require.True(t, res.Found)
		waitDone(t, chk, 200*time.Millisecond)
	})
}

// Lease refreshes go out in one pipelined round trip per refresh interval
// for all runs of a registry, not one per run.
func TestLeaseRefreshIsOnePipeline(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		const ttl = 300 * time.Millisecond // refresh every 100ms
		c := e.client(t)
		hook := &commandCounter{}
		c.AddHook(hook)
		a := e.registryOn(t, c, "node-a", streamcancel.WithTTL(ttl), streamcancel.WithPollInterval(time.Hour))

		for i := 0; i < 50; i++ {
			chk, err := a.Start(ctx, "chat-"+string(rune('A'+i)))
			require.NoError(t, err)
			defer chk.Close()
		}

		commands, pipelines := hook.commands.Load(), hook.pipelines.Load()
		time.Sleep(time.Second)
		assert.Equal(t, commands, hook.commands.Load(), "single commands during refreshes")
		refreshes := hook.pipelines.Load() - pipelines
		assert.GreaterOrEqual(t, refreshes, int64(5), "pipelines in 1s")
		assert.LessOrEqual(t, refreshes, int64(12), "pipelines in 1s")
	})
}

// A node that dies without Close leaves nothing once the TTL passes, and a
// cancel of its runs then finds nothing.
func TestDeadNodeKeysExpire(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		const ttl = time.Second
		proxy := newProxy(t, e.addr)
		a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a", streamcancel.WithTTL(ttl))
		b := e.registry(t, "node-b")
		c := e.client(t)

		ids := make([]string, 100)
		for i := range ids {
			ids[i] = "run-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('0'+i/26))
			_, err := a.Start(ctx, ids[i])
			require.NoError(t, err)
		}
		require.Len(t, e.keys(t, c), len(ids))

		// The node's connections are cut and it never calls Close.
		proxy.Refuse(true)
		proxy.Cut()

		if e.mini != nil {
			e.mini.FastForward(ttl + 500*time.Millisecond)
		} else {
			time.Sleep(ttl + 500*time.Millisecond)
		}
		assert.Empty(t, e.keys(t, c))
		for _, id := range ids[:10] {
			res, err := b.Cancel(ctx, id)
			require.NoError(t, err)
			assert.False(t, res.Found, "cancel of %q", id)
		}
	})
}

// Every key under the prefix has a TTL at every sample of a churn of runs
// that finish, get canceled or are abandoned, and no key is left after the
// longest TTL.
func TestEveryKeyHasTTL(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		const ttl = 500 * time.Millisecond
		proxy := newProxy(t, e.addr)
		abandoned := e.registryOn(t, clientAt(t, proxy.Addr()), "node-x", streamcancel.WithTTL(ttl))
		a := e.registry(t, "node-a", streamcancel.WithTTL(ttl), streamcancel.WithPollInterval(20*time.Millisecond))
		b := e.registry(t, "node-b", streamcancel.WithTTL(ttl))
		c := e.client(t)

		stopSampling := sampleTTLs(e, c, 0)

		var open []*streamcancel.Checker
		for i := 0; i < 2000; i++ {
			id := "churn-" + itoa(i)
			switch i % 4 {
			case 0: // finishes
				chk, err := a.Start(ctx, id)
				require.NoError(t, err)
				require.NoError(t, chk.Close())
			case 1: // canceled from another node
				chk, err := a.Start(ctx, id)
				require.NoError(t, err)
				_, err = b.Cancel(ctx, id)
				require.NoError(t, err)
				open = append(open, chk)
			case 2: // abandoned on a node that dies
				_, err := abandoned.Start(ctx, id)
				require.NoError(t, err)
			case 3: // canceled with no run
				_, err := b.Cancel(ctx, id)
				require.NoError(t, err)
			}
		}
		for _, chk := range open {
			require.NoError(t, chk.Close())
		}
		proxy.Refuse(true)
		proxy.Cut()
		taken, violations := stopSampling()
		assert.Positive(t, taken, "TTL samples taken")
		assert.Empty(t, violations, "keys without a TTL during the churn")

		if e.mini != nil {
			e.mini.FastForward(ttl + 100*time.Millisecond)
		} else {
			time.Sleep(ttl + 100*time.Millisecond)
		}
		assert.Empty(t, e.keys(t, c))
	})
}

// Stream IDs are opaque bytes: IDs with pattern characters, braces,
// escapes, spaces, newlines or non-ASCII text each reach only their own
// run, and a cancel of one stops no other.
func TestStreamIDsAreOpaque(t *testing.T) {
	ids := []string{
		"plain", "a:b", "a*", "*", "a?", "[a]", "{a}", "a}", "{", "}", "{}",
		"a%7D", "%", "%25", "a b", "a\nb", "\x00", "cuộc trò chuyện", "会话",
		"\xff\xfe\xfd", "\r\n", "\x00\x00", "}%7D", "%7D}", "%257D",
		strings.Repeat("z", streamcancel.MaxStreamIDLen),
		strings.Repeat("}", streamcancel.MaxStreamIDLen),
		strings.Repeat("%", streamcancel.MaxStreamIDLen),
		strings.Repeat("{", streamcancel.MaxStreamIDLen),
		strings.Repeat("é", streamcancel.MaxStreamIDLen/2),
	}
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")
		waitSubscribed(t, a)

		runs := map[string]*streamcancel.Checker{}
		for _, id := range ids {
			chk, err := a.Start(ctx, id)
			require.NoError(t, err, "Start(%q)", id)
			runs[id] = chk
		}
		assert.Len(t, e.keys(t, e.client(t)), len(ids), "one key per stream")

		for i, id := range ids {
			res, err := b.Cancel(ctx, id)
			require.NoError(t, err, "Cancel(%q)", id)
			require.True(t, res.Found, "Cancel(%q).Found", id)
			waitDone(t, runs[id], time.Second)
			for _, other := range ids[i+1:] {
				require.False(t, runs[other].Cancelled(), "run %q canceled by Cancel(%q)", other, id)
			}
			require.NoError(t, runs[id].Close())
		}
		assert.Empty(t, e.keys(t, e.client(t)))
	})
}

// Empty and over-long IDs are rejected with ErrInvalidStreamID, and
// nothing reaches Redis.
func TestInvalidStreamID(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		long := strings.Repeat("z", streamcancel.MaxStreamIDLen+1)

		for _, id := range []string{"", long} {
			_, err := a.Start(ctx, id)
			assert.ErrorIs(t, err, streamcancel.ErrInvalidStreamID, "Start of a %d-byte ID", len(id))
			_, err = a.Cancel(ctx, id)
			assert.ErrorIs(t, err, streamcancel.ErrInvalidStreamID, "Cancel of a %d-byte ID", len(id))
		}
		_, err := a.Start(ctx, long)
		assert.ErrorContains(t, err, "513 bytes")
		multibyte := strings.Repeat("é", streamcancel.MaxStreamIDLen/2+1)
		_, err = a.Start(ctx, multibyte)
		assert.ErrorIs(t, err, streamcancel.ErrInvalidStreamID, "ID of %d bytes", len(multibyte))
		assert.Empty(t, e.keys(t, e.client(t)))
	})
}

func TestNewRegistryRejectsInvalidOptions(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()

	tests := []struct {
		name string
		opt  streamcancel.Option
		want string
	}{
		{"check every zero", streamcancel.WithCheckEvery(0), "WithCheckEvery(0)"},
		{"TTL too short", streamcancel.WithTTL(99 * time.Millisecond), "WithTTL(99ms)"},
		{"poll interval too short", streamcancel.WithPollInterval(time.Millisecond), "WithPollInterval(1ms)"},
		{"empty prefix", streamcancel.WithKeyPrefix(""), `WithKeyPrefix("")`},
		{"prefix with brace", streamcancel.WithKeyPrefix("app{1}"), `WithKeyPrefix("app{1}")`},
		{"prefix too long", streamcancel.WithKeyPrefix(strings.Repeat("p", 129)), "WithKeyPrefix"},
		{"empty node ID", streamcancel.WithNodeID(""), `WithNodeID("")`},
		{"node ID too long", streamcancel.WithNodeID(strings.Repeat("n", 129)), "WithNodeID"},
		{"nil option", nil, "option 1 is a nil Option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := streamcancel.NewRegistry(rdb, tt.opt)
			require.ErrorIs(t, err, streamcancel.ErrInvalidOption)
			assert.ErrorContains(t, err, tt.want)
			assert.Nil(t, r)
		})
	}

	_, err := streamcancel.NewRegistry(nil)
	assert.ErrorIs(t, err, streamcancel.ErrInvalidOption, "nil client")
	var typedNil *redis.Client
	_, err = streamcancel.NewRegistry(typedNil)
	assert.ErrorIs(t, err, streamcancel.ErrInvalidOption, "nil *redis.Client")
}

func TestNewRegistryAcceptsLimits(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: downAddr(t)})
	defer rdb.Close()

	r, err := streamcancel.NewRegistry(rdb,
		streamcancel.WithCheckEvery(1),
		streamcancel.WithTTL(100*time.Millisecond),
		streamcancel.WithPollInterval(10*time.Millisecond),
		streamcancel.WithKeyPrefix(strings.Repeat("p", 128)),
		streamcancel.WithNodeID(strings.Repeat("n", 128)),
		streamcancel.WithLogger(nil),
	)
	require.NoError(t, err, "NewRegistry while Redis is down")
	assert.Equal(t, strings.Repeat("n", 128), r.NodeID())
	require.NoError(t, r.Close())
}

func TestDefaultNodeIDIsUnique(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: downAddr(t)})
	defer rdb.Close()

	r1, err := streamcancel.NewRegistry(rdb)
	require.NoError(t, err)
	defer r1.Close()
	r2, err := streamcancel.NewRegistry(rdb)
	require.NoError(t, err)
	defer r2.Close()

	assert.NotEqual(t, r1.NodeID(), r2.NodeID())
	assert.NotEmpty(t, r1.NodeID())
}

// After Close, Start and Cancel return ErrClosed, while Checkers of the
// closed registry keep working locally, and the markers are gone.
func TestRegistryClose(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		b := e.registry(t, "node-b")

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)

		require.NoError(t, a.Close())
		require.NoError(t, a.Close(), "second Close")

		_, err = a.Start(ctx, "chat-2")
		assert.ErrorIs(t, err, streamcancel.ErrClosed)
		_, err = a.Cancel(ctx, "chat-1")
		assert.ErrorIs(t, err, streamcancel.ErrClosed)

		assert.False(t, chk.Cancelled(), "Cancelled() of a run of a closed registry")
		assert.NoError(t, chk.Err())
		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		assert.False(t, res.Found, "cancel of a run of a closed registry")
		assert.False(t, chk.Cancelled())
		assert.NoError(t, chk.Close())
		assert.True(t, chk.Cancelled())
	})
}

// Close returns within one second while Redis refuses connections or does
// not reply at all.
func TestRegistryCloseWhileRedisDown(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		e := ownServer(t)
		a := e.registry(t, "node-a", streamcancel.WithPollInterval(10*time.Millisecond))
		for i := 0; i < 10; i++ {
			_, err := a.Start(ctx, "chat-"+itoa(i))
			require.NoError(t, err)
		}
		e.server.Stop()

		start := time.Now()
		err := a.Close()
		assert.Less(t, time.Since(start), time.Second)
		assert.ErrorContains(t, err, "removing the markers of 10 runs failed", "Close while Redis is down")
	})
	t.Run("blackhole", func(t *testing.T) {
		e := ownServer(t)
		proxy := newProxy(t, e.addr)
		rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: 300 * time.Millisecond})
		defer rdb.Close()
		a, err := streamcancel.NewRegistry(rdb, streamcancel.WithPollInterval(10*time.Millisecond))
		require.NoError(t, err)
		for i := 0; i < 10; i++ {
			_, err := a.Start(ctx, "chat-"+itoa(i))
			require.NoError(t, err)
		}
		proxy.Freeze()

		start := time.Now()
		_ = a.Close() // may report a call still in flight
		assert.Less(t, time.Since(start), time.Second)

		// Calls in flight end within the client's ReadTimeout.
		time.Sleep(time.Second)
	})
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

var _ = errors.Is
