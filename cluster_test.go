package streamcancel_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
	"github.com/streamcancel/streamcancel/internal/redistest"
)

// The tests in this file run the cross-node scenarios on a Redis Cluster of
// three primaries with one replica each, and on a primary managed by
// Sentinel, then fail the primary over and check that cancels work again.
// The registries get the cluster and failover clients of go-redis with
// default options, as users would pass them.

// clusterEnv is one Redis Cluster shared by the subtests of a test. Each
// subtest uses a key prefix of its own.
type clusterEnv struct {
	cluster *redistest.Cluster
	admin   *redis.ClusterClient
}

// registry returns a registry named node on a cluster client of its own,
// closed when the test ends.
func (ce *clusterEnv) registry(t *testing.T, prefix, node string, opts ...streamcancel.Option) *streamcancel.Registry {
	e := &env{prefix: prefix}
	return e.registryOn(t, ce.cluster.Client(t), node, opts...)
}

// existing returns how many of keys exist, with one EXISTS per key, since
// keys of different slots cannot share a command.
func (ce *clusterEnv) existing(t *testing.T, keys []string) int {
	cmds, err := ce.admin.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, k := range keys {
			pipe.Exists(ctx, k)
		}
		return nil
	})
	require.NoError(t, err)
	n := 0
	for _, cmd := range cmds {
		n += int(cmd.(*redis.IntCmd).Val())
	}
	return n
}

// subscribers returns the number of subscribers of channel on all
// primaries and replicas that serve slots, together. ForEachShard calls
// its function on parallel goroutines.
func (ce *clusterEnv) subscribers(channel string) (int64, error) {
	var n atomic.Int64
	err := ce.admin.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
		counts, err := node.PubSubNumSub(ctx, channel).Result()
		n.Add(counts[channel])
		return err
	})
	return n.Load(), err
}

// requireOneSubscriber waits until channel has exactly one subscriber in
// the cluster, and checks again after a while, because a replaced
// connection that lingers or a second subscribe loop would show up late.
func (ce *clusterEnv) requireOneSubscriber(t *testing.T, channel string) {
	require.Eventually(t, func() bool {
		n, err := ce.subscribers(channel)
		return err == nil && n == 1
	}, 3*time.Second, 10*time.Millisecond, "one subscriber of %s in the cluster", channel)

	time.Sleep(500 * time.Millisecond)
	n, err := ce.subscribers(channel)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "subscribers of %s in the cluster", channel)
}

// spreadIDs returns n stream IDs whose keys under prefix fall on every
// primary of the cluster, at least n/4 on each.
func (ce *clusterEnv) spreadIDs(t *testing.T, prefix string, n int) []string {
	ranges, err := ce.admin.ClusterSlots(ctx).Result()
	require.NoError(t, err)
	perPrimary := map[string]int{}

	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("chat-%03d", i)
		slot, err := ce.admin.ClusterKeySlot(ctx, (&env{prefix: prefix}).runKey(ids[i])).Result()
		require.NoError(t, err)
		for _, r := range ranges {
			if int(slot) >= r.Start && int(slot) <= r.End {
				perPrimary[r.Nodes[0].Addr]++
			}
		}
	}
	require.Len(t, perPrimary, 3, "primaries holding the IDs: %v", perPrimary)
	for addr, count := range perPrimary {
		require.GreaterOrEqual(t, count, n/4, "IDs on the primary %s", addr)
	}
	t.Logf("IDs per primary: %v", perPrimary)
	return ids
}

// shardOf returns the primary that serves the slot of key and its
// replica. After a failover the old primary rejoins as a replica only once
// it has synchronized, so shardOf waits up to 10s for the slot to list
// two nodes.
func (ce *clusterEnv) shardOf(t *testing.T, key string) (primary, replica *redistest.Server) {
	slot, err := ce.admin.ClusterKeySlot(ctx, key).Result()
	require.NoError(t, err)
	byAddr := map[string]*redistest.Server{}
	for _, s := range ce.cluster.Nodes() {
		byAddr[s.Addr()] = s
	}

	var nodes []redis.ClusterNode
	require.Eventually(t, func() bool {
		ranges, err := ce.admin.ClusterSlots(ctx).Result()
		if err != nil {
			return false
		}
		for _, r := range ranges {
			if int(slot) >= r.Start && int(slot) <= r.End {
				nodes = r.Nodes
				return len(nodes) == 2
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "two nodes serving slot %d", slot)
	return byAddr[nodes[0].Addr], byAddr[nodes[1].Addr]
}

// servedBy returns a stream ID whose keys under prefix the primary
// serves.
func (ce *clusterEnv) servedBy(t *testing.T, prefix string, primary *redistest.Server) string {
	for i := 0; i < 100; i++ {
		id := fmt.Sprintf("on-%s-%d", primary.Addr(), i)
		if p, _ := ce.shardOf(t, (&env{prefix: prefix}).runKey(id)); p == primary {
			return id
		}
	}
	t.Fatalf("no stream ID found on the primary %s", primary.Addr())
	return ""
}

// migrateSlot opens the migration of key's slot from its primary to
// another primary, as a resharding does, and returns a function that moves
// the slot's keys with MIGRATE and then assigns the slot to the new
// primary. The function may run on another goroutine.
func (ce *clusterEnv) migrateSlot(t *testing.T, key string) (finish func() error) {
	slot, err := ce.admin.ClusterKeySlot(ctx, key).Result()
	require.NoError(t, err)
	src, _ := ce.shardOf(t, key)
	var dst *redistest.Server
	for _, p := range ce.cluster.Nodes() {
		if info, err := p.Client(t).Info(ctx, "replication").Result(); err == nil && p != src && strings.Contains(info, "role:master\r\n") {
			dst = p
			break
		}
	}
	require.NotNil(t, dst, "another primary")
	srcID, err := src.Client(t).Do(ctx, "CLUSTER", "MYID").Text()
	require.NoError(t, err)
	dstID, err := dst.Client(t).Do(ctx, "CLUSTER", "MYID").Text()
	require.NoError(t, err)
	srcClient, dstClient := src.Client(t), dst.Client(t)

	require.NoError(t, dstClient.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err())
	require.NoError(t, srcClient.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err())
	host, port, _ := strings.Cut(dst.Addr(), ":")
	return func() error {
		keys, err := srcClient.ClusterGetKeysInSlot(ctx, int(slot), 1000).Result()
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := srcClient.Migrate(ctx, host, port, k, 0, 5*time.Second).Err(); err != nil {
				return err
			}
		}
		for _, c := range []*redis.Client{dstClient, srcClient} {
			if err := c.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err(); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestCluster(t *testing.T) {
	cluster := redistest.StartCluster(t)
	ce := &clusterEnv{cluster: cluster, admin: cluster.Client(t)}

	// F1 on a cluster: A's loop ends within 100ms of B's Cancel.
	t.Run("StopLandsOnOtherNode", func(t *testing.T) {
		a := ce.registry(t, "f1", "node-a")
		b := ce.registry(t, "f1", "node-b")
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()
		loop := startChunkLoop(chk, 10*time.Millisecond, 1000, 20)
		loop.waitReached(t, 5*time.Second)

		cancelAt := time.Now()
		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		assert.True(t, res.Found, "Cancel(chat-1).Found")
		assert.Equal(t, "node-a", res.NodeID)

		ended := loop.waitEnded(t, 2*time.Second)
		assert.True(t, loop.stopped, "loop ended by Cancelled()")
		assert.Less(t, ended.Sub(cancelAt), 100*time.Millisecond, "loop end after Cancel")
		assert.ErrorIs(t, context.Cause(chk.Context()), streamcancel.ErrCanceled)
	})

	// The cancel semantics on a cluster, with stream keys on every primary
	// and the group key in a slot of its own: CancelGroup cancels and
	// counts runs on all primaries, CancelAndWait confirms a run's end, a
	// pending cancel stops the next Start, and a takeover cancels the old
	// run on the other node. No MOVED, ASK or CROSSSLOT error reaches the
	// caller.
	t.Run("CancelSemantics", func(t *testing.T) {
		a := ce.registry(t, "sem", "node-a")
		b := ce.registry(t, "sem", "node-b", streamcancel.WithPendingCancel(time.Second))
		waitSubscribed(t, a)
		ids := ce.spreadIDs(t, "sem", 24)

		chks := make([]*streamcancel.Checker, len(ids))
		for i, id := range ids {
			chk, err := a.Start(ctx, id, streamcancel.WithGroup("conv-1"))
			require.NoError(t, err)
			defer chk.Close()
			chks[i] = chk
		}
		cancelAt := time.Now()
		n, err := b.CancelGroup(ctx, "conv-1", streamcancel.WithReason("user left"))
		require.NoError(t, err)
		assert.Equal(t, len(ids), n, "runs CancelGroup counted")
		for i, chk := range chks {
			waitDone(t, chk, time.Until(cancelAt.Add(500*time.Millisecond)))
			var cause *streamcancel.CancelError
			require.ErrorAs(t, context.Cause(chk.Context()), &cause, "cause of %s", ids[i])
			assert.Equal(t, "user left", cause.Reason)
		}

		chk, err := a.Start(ctx, "wait-1")
		require.NoError(t, err)
		go func() {
			<-chk.Context().Done()
			time.Sleep(20 * time.Millisecond)
			_ = chk.Close()
		}()
		waitCtx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		res, err := b.CancelAndWait(waitCtx, "wait-1")
		require.NoError(t, err)
		assert.True(t, res.Found)
		assert.GreaterOrEqual(t, res.StopDuration, 20*time.Millisecond, "StopDuration")

		res, err = b.Cancel(ctx, "pending-1")
		require.NoError(t, err)
		assert.True(t, res.Pending, "Cancel of a stream with no run stores a pending cancel")
		chk, err = a.Start(ctx, "pending-1")
		require.NoError(t, err)
		assert.True(t, chk.Cancelled(), "first Cancelled() after a pending cancel")
		require.NoError(t, chk.Close())

		old, err := a.Start(ctx, "taken-1")
		require.NoError(t, err)
		defer old.Close()
		taker, err := b.Start(ctx, "taken-1", streamcancel.WithTakeover())
		require.NoError(t, err)
		defer taker.Close()
		waitDone(t, old, 500*time.Millisecond)
		assert.ErrorIs(t, context.Cause(old.Context()), streamcancel.ErrTakenOver)
		assert.False(t, taker.Cancelled(), "new run after the takeover")

		assert.Zero(t, a.Stats().SyncErrors+a.Stats().StartErrors+b.Stats().StartErrors, "errors of A and B")
	})

	// F2 on a cluster: every node drops its Pub/Sub connections, and B
	// cancels 500ms later. A stops within PollInterval + 200ms, and then
	// exactly one subscriber of A's channel is alive in the whole cluster.
	t.Run("SubscriberConnectionDropped", func(t *testing.T) {
		const poll = time.Second
		a := ce.registry(t, "f2", "node-a", streamcancel.WithPollInterval(poll))
		b := ce.registry(t, "f2", "node-b", streamcancel.WithPollInterval(poll))
		waitSubscribed(t, a)
		waitSubscribed(t, b)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()
		loop := startChunkLoop(chk, time.Millisecond, 100000, 1)

		killed := 0
		for _, node := range cluster.Nodes() {
			n, err := node.Client(t).Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Int()
			require.NoError(t, err)
			killed += n
		}
		require.GreaterOrEqual(t, killed, 2, "Pub/Sub connections killed")

		time.Sleep(500 * time.Millisecond)
		require.False(t, loop.hasEnded(), "loop ended before the cancel")

		cancelAt := time.Now()
		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		require.True(t, res.Found, "Cancel(chat-1).Found")
		ended := loop.waitEnded(t, poll+time.Second)
		assert.Less(t, ended.Sub(cancelAt), poll+200*time.Millisecond, "loop end after Cancel")

		ce.requireOneSubscriber(t, "f2:node:node-a")
	})

	// F3 on a cluster: the marker of A's run is deleted and every node's
	// script cache is flushed, as when a shard loses its data. The stream goes
	// on, A registers the run again within one PollInterval, and B's
	// cancel then finds it.
	t.Run("LostMarkerIsRegisteredAgain", func(t *testing.T) {
		const poll = time.Second
		a := ce.registry(t, "f3", "node-a")
		b := ce.registry(t, "f3", "node-b")
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()
		key := (&env{prefix: "f3"}).runKey("chat-1")
		require.NoError(t, ce.admin.ScriptFlush(ctx).Err())
		require.NoError(t, ce.admin.Del(ctx, key).Err())

		require.Eventually(t, func() bool { return ce.existing(t, []string{key}) == 1 }, poll+500*time.Millisecond, 10*time.Millisecond, "marker registered again")
		assert.NoError(t, chk.Err())

		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		require.True(t, res.Found, "Cancel(chat-1).Found")
		waitDone(t, chk, poll+200*time.Millisecond)
		assert.ErrorIs(t, context.Cause(chk.Context()), streamcancel.ErrCanceled)
	})

	// F6 on a cluster: with a TTL of 1s the marker of a 5s run keeps a
	// positive PTTL at every sample, and B's cancel at 4s stops A within
	// 200ms.
	t.Run("RunLongerThanLease", func(t *testing.T) {
		const ttl = time.Second
		a := ce.registry(t, "f6", "node-a", streamcancel.WithTTL(ttl))
		b := ce.registry(t, "f6", "node-b", streamcancel.WithTTL(ttl))
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		defer chk.Close()
		started := time.Now()
		loop := startChunkLoop(chk, 10*time.Millisecond, 500, 1)

		key := (&env{prefix: "f6"}).runKey("chat-1")
		for time.Since(started) < 4*time.Second {
			time.Sleep(100 * time.Millisecond)
			pttl, err := ce.admin.PTTL(ctx, key).Result()
			require.NoError(t, err)
			require.Greater(t, pttl, time.Duration(0), "PTTL of the marker %v after Start", time.Since(started))
		}

		cancelAt := time.Now()
		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err)
		require.True(t, res.Found, "Cancel(chat-1).Found at 4s")
		ended := loop.waitEnded(t, 2*time.Second)
		assert.Less(t, ended.Sub(cancelAt), 200*time.Millisecond, "loop end after Cancel")
	})

	// F7 on a cluster: A starts 100 runs on all primaries and its client
	// is closed without Registry.Close, as a node that dies. TTL + 500ms
	// later none of their keys exists and B's cancels find nothing.
	t.Run("NodeDiesWithoutCleanup", func(t *testing.T) {
		const ttl = time.Second
		rdbA := cluster.Client(t)
		a := (&env{prefix: "f7"}).registryOn(t, rdbA, "node-a", streamcancel.WithTTL(ttl))
		b := ce.registry(t, "f7", "node-b", streamcancel.WithTTL(ttl))

		ids := ce.spreadIDs(t, "f7", 100)
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = (&env{prefix: "f7"}).runKey(id)
			_, err := a.Start(ctx, id)
			require.NoError(t, err)
		}
		require.Equal(t, len(ids), ce.existing(t, keys), "markers before the node dies")

		require.NoError(t, rdbA.Close())
		time.Sleep(ttl + 500*time.Millisecond)

		assert.Zero(t, ce.existing(t, keys), "markers of the dead node's runs TTL + 500ms after it died")
		for _, id := range ids {
			res, err := b.Cancel(ctx, id)
			require.NoError(t, err)
			assert.False(t, res.Found, "Cancel(%q).Found", id)
		}
	})

	// A resharding moves the slot of a run's keys to another primary. While
	// the slot migrates, Redis rejects every script on the stream's keys
	// with TRYAGAIN. The run keeps going meanwhile, B's Cancel and
	// CancelGroup wait for the migration to end instead of failing, the
	// run stops, and its marker lives on at the new primary.
	t.Run("CancelDuringSlotMigration", func(t *testing.T) {
		a := ce.registry(t, "mig", "node-a", streamcancel.WithPollInterval(100*time.Millisecond))
		b := ce.registry(t, "mig", "node-b")
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1", streamcancel.WithGroup("conv-1"))
		require.NoError(t, err)
		defer chk.Close()
		key := (&env{prefix: "mig"}).runKey("chat-1")
		finish := ce.migrateSlot(t, key)
		time.Sleep(300 * time.Millisecond)
		require.NoError(t, chk.Err(), "run while its slot migrates")

		migrated := make(chan error, 1)
		go func() {
			time.Sleep(500 * time.Millisecond)
			migrated <- finish()
		}()
		var n int
		var groupErr error
		grouped := make(chan struct{})
		go func() {
			defer close(grouped)
			n, groupErr = b.CancelGroup(ctx, "conv-1")
		}()
		res, err := b.Cancel(ctx, "chat-1")
		require.NoError(t, err, "Cancel while the slot migrates")
		require.True(t, res.Found, "Cancel(chat-1).Found")
		<-grouped
		require.NoError(t, groupErr, "CancelGroup while the slot migrates")
		assert.Equal(t, 1, n, "runs CancelGroup counted")
		require.NoError(t, <-migrated, "migration")
		waitDone(t, chk, 500*time.Millisecond)
		assert.ErrorIs(t, context.Cause(chk.Context()), streamcancel.ErrCanceled)
		pttl, err := ce.admin.PTTL(ctx, key).Result()
		require.NoError(t, err)
		assert.Greater(t, pttl, time.Duration(0), "PTTL of the marker after the migration")
	})

	// F14: 96 runs spread over all three primaries start on A and B
	// cancels all of them at once. Each stops within 500ms, and no Cancel
	// returns an error, so no MOVED, ASK or CROSSSLOT reply reaches the
	// caller. Then a replica takes over its primary with CLUSTER FAILOVER,
	// and later a primary is killed. After each switch, cancels stop new
	// runs on every primary within 5s.
	t.Run("CancelsAcrossPrimaries", func(t *testing.T) {
		a := ce.registry(t, "f14", "node-a")
		b := ce.registry(t, "f14", "node-b")
		waitSubscribed(t, a)
		ids := ce.spreadIDs(t, "f14", 96)

		round := func(t *testing.T, limit time.Duration) {
			t.Helper()
			chks := make([]*streamcancel.Checker, len(ids))
			for i, id := range ids {
				chk, err := a.Start(ctx, id)
				require.NoError(t, err)
				chks[i] = chk
			}
			defer func() {
				for _, chk := range chks {
					_ = chk.Close()
				}
			}()

			pushes := a.Stats().PushesReceived
			cancelAt := time.Now()
			var wg sync.WaitGroup
			errs := make([]error, len(ids))
			found := make([]bool, len(ids))
			for i, id := range ids {
				wg.Add(1)
				go func(i int, id string) {
					defer wg.Done()
					res, err := b.Cancel(ctx, id)
					errs[i], found[i] = err, res.Found
				}(i, id)
			}

			var slowest time.Duration
			stopped := 0
			for _, chk := range chks {
				select {
				case <-chk.Context().Done():
					stopped++
					slowest = max(slowest, time.Since(cancelAt))
				case <-time.After(time.Until(cancelAt.Add(limit))):
				}
			}
			wg.Wait()
			for i, err := range errs {
				require.NoError(t, err, "Cancel(%q)", ids[i])
				require.True(t, found[i], "Cancel(%q).Found", ids[i])
			}
			require.Equal(t, len(ids), stopped, "runs stopped within %v", limit)
			// A poll pass may stop a run before its push arrives, so the
			// pushes may come in after the runs stopped.
			assert.Eventually(t, func() bool { return a.Stats().PushesReceived-pushes >= uint64(len(ids)) }, time.Second, time.Millisecond,
				"A did not receive a push for each of the %d cancels", len(ids))
			t.Logf("%d of %d runs stopped, the last %v after the cancels began", stopped, len(ids), slowest)
		}

		round(t, 500*time.Millisecond)
		assert.Zero(t, a.Stats().SyncErrors+a.Stats().StartErrors, "errors of A")

		t.Run("ManualFailover", func(t *testing.T) {
			replica := cluster.Replicas[0]
			require.NoError(t, replica.Client(t).Do(ctx, "CLUSTER", "FAILOVER").Err())
			switched := waitRole(t, replica, "master", 10*time.Second)
			t.Logf("the replica took over %v after CLUSTER FAILOVER", switched)
			cancelsWorkWithin(t, a, b, ids, 5*time.Second)
			cluster.WaitReady(10 * time.Second)
			round(t, 500*time.Millisecond)
		})

		// The primary killed serves the slot of A's channel, so A's
		// subscriber must move to the replica that takes over.
		t.Run("PrimaryKilled", func(t *testing.T) {
			primary, replica := ce.shardOf(t, "f14:node:node-a")
			subscriptions := a.Stats().Subscriptions

			// B waits for a run whose keys the primary serves, and the
			// run ends while the primary is down.
			waitID := ce.servedBy(t, "f14", primary)
			run, err := a.Start(ctx, waitID)
			require.NoError(t, err)
			waited := make(chan error, 1)
			go func() {
				wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				_, err := b.CancelAndWait(wctx, waitID)
				waited <- err
			}()
			waitDone(t, run, time.Second)
			// The replica has the wait record, written with the cancel.
			replicaReader := redis.NewClient(&redis.Options{
				Addr:      replica.Addr(),
				OnConnect: func(ctx context.Context, cn *redis.Conn) error { return cn.ReadOnly(ctx).Err() },
			})
			defer replicaReader.Close()
			waitKey := "f14:{" + waitID + "}:wait"
			require.Eventually(t, func() bool { return replicaReader.Exists(ctx, waitKey).Val() == 1 }, time.Second, 5*time.Millisecond, "%s on the replica", waitKey)

			primary.Kill()
			assert.Error(t, run.Close(), "Close while the primary is down")
			switched := waitRole(t, replica, "master", 10*time.Second)
			t.Logf("the replica took over %v after the primary was killed", switched)
			cancelsWorkWithin(t, a, b, ids, 5*time.Second)
			cluster.WaitReady(10 * time.Second)
			round(t, 500*time.Millisecond)
			assert.Greater(t, a.Stats().Subscriptions, subscriptions, "subscriptions of A")
			ce.requireOneSubscriber(t, "f14:node:node-a")

			select {
			case err := <-waited:
				assert.NoError(t, err, "CancelAndWait of a run that ended during the failover")
			case <-time.After(5 * time.Second):
				t.Errorf("CancelAndWait of a run that ended during the failover has not returned")
			}
		})
	})
}

// waitRole waits until the server reports role as its replication role
// and returns how long that took.
func waitRole(t *testing.T, s *redistest.Server, role string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c := s.Client(t)
	require.Eventually(t, func() bool {
		info, err := c.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:"+role+"\r\n")
	}, limit, 10*time.Millisecond, "role of %s", s.Addr())
	return time.Since(start)
}

// cancelsWorkWithin starts a run of each ID on a, right after a failover,
// and lets b cancel each until its Cancel finds the run. Every run must
// have stopped within limit. Errors of Cancel are allowed while the
// topology settles, but none may be a redirection or a cross-slot error.
func cancelsWorkWithin(t *testing.T, a, b *streamcancel.Registry, ids []string, limit time.Duration) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(limit)

	var failures []string
	for _, id := range ids {
		var chk *streamcancel.Checker
		for chk == nil && time.Now().Before(deadline) {
			c, err := a.Start(ctx, id)
			if err != nil {
				// A run of an earlier attempt may still hold the stream.
				time.Sleep(20 * time.Millisecond)
				continue
			}
			chk = c
		}
		require.NotNil(t, chk, "Start(%q) did not succeed within %v", id, limit)
		defer chk.Close()

		for chk.Err() == nil && time.Now().Before(deadline) {
			cctx, cancel := context.WithTimeout(ctx, time.Until(deadline))
			res, err := b.Cancel(cctx, id)
			cancel()
			if err != nil {
				failures = append(failures, err.Error())
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if !res.Found {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			select {
			case <-chk.Context().Done():
			case <-time.After(time.Until(deadline)):
			}
		}
		require.ErrorIs(t, context.Cause(chk.Context()), streamcancel.ErrCanceled, "run of %q %v after the switch", id, time.Since(start))
	}
	t.Logf("all %d runs canceled %v after the switch; %d Cancel calls failed meanwhile", len(ids), time.Since(start), len(failures))
	for _, f := range failures {
		for _, bad := range []string{"MOVED", "ASK", "CROSSSLOT"} {
			assert.NotContains(t, f, bad, "error of a Cancel call")
		}
	}
}

// A primary managed by Sentinel: B's cancel stops A's run through the
// failover client. Then the primary is killed, the Sentinel promotes the
// replica, and cancels stop new runs within 5s of the switch. A
// CancelAndWait of a run that ended while the primary was down returns
// once the new primary answers.
func TestSentinelFailover(t *testing.T) {
	group := redistest.StartSentinel(t)
	e := &env{prefix: "sentinel"}
	a := e.registryOn(t, group.Client(t), "node-a")
	b := e.registryOn(t, group.Client(t), "node-b")
	waitSubscribed(t, a)

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer chk.Close()
	res, err := b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	require.True(t, res.Found, "Cancel(chat-1).Found")
	assert.True(t, res.Pushed, "Cancel(chat-1).Pushed")
	waitDone(t, chk, 100*time.Millisecond)

	// B waits for a run that ends while the primary is down.
	run, err := a.Start(ctx, "wait-1")
	require.NoError(t, err)
	waited := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := b.CancelAndWait(wctx, "wait-1")
		waited <- err
	}()
	waitDone(t, run, time.Second)
	// The replica has the wait record, written with the cancel.
	waitKey := "sentinel:{wait-1}:wait"
	require.Eventually(t, func() bool { return group.Replica.Client(t).Exists(ctx, waitKey).Val() == 1 }, time.Second, 5*time.Millisecond, "%s on the replica", waitKey)

	old := group.Primary.Addr()
	group.Primary.Kill()
	killed := time.Now()
	assert.Error(t, run.Close(), "Close while the primary is down")
	require.Eventually(t, func() bool {
		addr, err := group.MasterAddr()
		return err == nil && addr != old
	}, 15*time.Second, 10*time.Millisecond, "Sentinel promoted the replica")
	t.Logf("the Sentinel switched the primary %v after it was killed", time.Since(killed))
	waitRole(t, group.Replica, "master", 5*time.Second)

	ids := []string{"chat-2", "chat-3", "chat-4"}
	cancelsWorkWithin(t, a, b, ids, 5*time.Second)

	// The push works again too: A's subscriber moved to the new primary.
	waitSubscribed(t, a)
	chk, err = a.Start(ctx, "chat-5")
	require.NoError(t, err)
	defer chk.Close()
	res, err = b.Cancel(ctx, "chat-5")
	require.NoError(t, err)
	require.True(t, res.Found, "Cancel(chat-5).Found")
	assert.True(t, res.Pushed, "Cancel(chat-5).Pushed")
	waitDone(t, chk, 100*time.Millisecond)

	select {
	case err := <-waited:
		assert.NoError(t, err, "CancelAndWait of a run that ended during the switch")
	case <-time.After(5 * time.Second):
		t.Errorf("CancelAndWait of a run that ended during the switch has not returned")
	}
}
