package streamcancel

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel/internal/redistest"
)

// A probe proves earlier pushes where the cancel scripts and the probe's
// PUBLISH run on one server: on a *redis.Client, Sentinel's included. On a
// cluster the pushes cross the cluster bus from every primary, and a ring
// runs scripts and PUBLISH on the shards of different keys.
func TestProbesProve(t *testing.T) {
	plain := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer plain.Close()
	failover := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "primary", SentinelAddrs: []string{"127.0.0.1:1"}})
	defer failover.Close()
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cluster.Close()
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"one": "127.0.0.1:1"}})
	defer ring.Close()

	assert.True(t, probesProve(plain), "*redis.Client")
	assert.True(t, probesProve(failover), "redis.NewFailoverClient")
	assert.False(t, probesProve(cluster), "*redis.ClusterClient")
	assert.False(t, probesProve(ring), "*redis.Ring")
}

// A probe waits PollInterval/50 for its message, at least a millisecond
// and at most 100ms.
func TestProbeWait(t *testing.T) {
	for poll, want := range map[time.Duration]time.Duration{
		10 * time.Millisecond:  time.Millisecond,
		100 * time.Millisecond: 2 * time.Millisecond,
		time.Second:            20 * time.Millisecond,
		time.Minute:            100 * time.Millisecond,
	} {
		c := config{pollInterval: poll}
		assert.Equal(t, want, c.probeWait(), "PollInterval %v", poll)
	}
}

// replicaSubscriber sends commands to a primary and subscribes on one of
// its replicas, as a plain client's subscriber does when it stays on a
// primary that was demoted behind an address that moved.
type replicaSubscriber struct {
	*redis.Client
	replica *redis.Client
}

func (s replicaSubscriber) Subscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return s.replica.Subscribe(ctx, channels...)
}

// orderedPush is true, as for the *redis.Client the wrapper stands for, so
// that the registry sends probes.
func (s replicaSubscriber) orderedPush() bool {
	return true
}

// replicaSetup is a primary with one replica, a registry A that sends
// commands to the primary and subscribes on the replica, and a registry B
// on the primary.
type replicaSetup struct {
	a, b         *Registry
	replicaAdmin *redis.Client
	host, port   string
}

// startReplicaSetup starts a replicaSetup with A's options and waits for
// A's subscription. Close runs at the end of the test.
func startReplicaSetup(t *testing.T, opts ...Option) *replicaSetup {
	primary := redistest.StartServer(t, "--repl-diskless-sync-delay", "0")
	replica := redistest.StartServer(t)
	s := &replicaSetup{replicaAdmin: replica.Client(t)}
	var err error
	s.host, s.port, err = net.SplitHostPort(primary.Addr())
	require.NoError(t, err)
	s.follow(t, 10*time.Second)
	awaitStreaming(t, primary.Client(t), replica.Client(t))

	s.a, err = NewRegistry(replicaSubscriber{Client: primary.Client(t), replica: replica.Client(t)}, append([]Option{WithNodeID("node-a")}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.a.Close() })
	s.b, err = NewRegistry(primary.Client(t), WithNodeID("node-b"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.b.Close() })
	require.Eventually(t, func() bool { return s.a.Stats().Subscribed }, 5*time.Second, 5*time.Millisecond, "subscribed")
	return s
}

// follow makes the replica replicate the primary and waits up to within
// for its link to be up.
func (s *replicaSetup) follow(t *testing.T, within time.Duration) {
	ctx := context.Background()
	require.NoError(t, s.replicaAdmin.SlaveOf(ctx, s.host, s.port).Err())
	require.Eventually(t, func() bool {
		info, err := s.replicaAdmin.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	}, within, time.Millisecond, "replica synchronized")
}

// awaitStreaming waits until a message published on primary reaches a
// subscriber on replica. After a full synchronization a primary can hold
// back the replication stream for hundreds of milliseconds after the
// replica reports its link up, until the replica acknowledges the data.
func awaitStreaming(t *testing.T, primary, replica *redis.Client) {
	ctx := context.Background()
	sub := replica.Subscribe(ctx, "replication-check")
	defer sub.Close()
	_, err := sub.Receive(ctx)
	require.NoError(t, err, "SUBSCRIBE on the replica")

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		require.NoError(t, primary.Publish(ctx, "replication-check", "check").Err())
		msg, err := sub.ReceiveTimeout(ctx, 20*time.Millisecond)
		if _, ok := msg.(*redis.Message); ok && err == nil {
			return
		}
	}
	t.Fatal("no message published on the primary reached the replica within 10s")
}

// leave makes the replica stop replicating.
func (s *replicaSetup) leave(t *testing.T) {
	require.NoError(t, s.replicaAdmin.SlaveOf(context.Background(), "NO", "ONE").Err())
}

// A subscriber on a replica receives the pushes and the probes through
// replication, but the primary, which ran the probe's PUBLISH, reports no
// receiver, so no probe serves a PollInterval and every PollInterval reads
// the records. Pushes still arrive through replication. Once the replica
// stops replicating, the read on the primary finds the cancel, although
// the subscriber's connection stays healthy.
func TestProbeThroughReplica(t *testing.T) {
	const poll = 100 * time.Millisecond
	ctx := context.Background()
	setup := startReplicaSetup(t, WithPollInterval(poll))
	a, b := setup.a, setup.b

	first, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer first.Close()
	second, err := a.Start(ctx, "chat-2")
	require.NoError(t, err)
	defer second.Close()

	time.Sleep(5 * poll)
	assert.Zero(t, a.Stats().Probes, "probes served through the replica")
	res, err := b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	require.True(t, res.Found)
	begin := time.Now()
	select {
	case <-first.Context().Done():
		t.Logf("cancel replicated to the subscriber stopped the run %v after Cancel returned", time.Since(begin))
	case <-time.After(poll):
		t.Fatalf("run not stopped %v after Cancel returned", poll)
	}
	assert.Equal(t, uint64(1), a.Stats().PushesReceived, "pushes received through the replica")

	setup.leave(t)
	res, err = b.Cancel(ctx, "chat-2")
	require.NoError(t, err)
	require.True(t, res.Found)
	begin = time.Now()
	limit := poll + poll/probeWaitDivisor + 100*time.Millisecond
	select {
	case <-second.Context().Done():
		t.Logf("cancel after replication stopped reached the run %v after Cancel returned", time.Since(begin))
	case <-time.After(limit):
		t.Fatalf("run not stopped %v after Cancel returned", limit)
	}
	assert.Equal(t, uint64(1), a.Stats().PushesReceived, "pushes received after replication stopped")
}

// A replica that stops replicating and comes back takes a full
// resynchronization, which copies the records but not the pushes that the
// primary published meanwhile. A subscriber on it has lost those pushes,
// and the probes that the primary publishes afterwards reach it through
// replication again. They report no receiver on the primary, so they prove
// nothing, and the next PollInterval reads the record. Here the replica
// leaves and comes back within one PollInterval, with the cancel recorded
// while it was away.
func TestProbeAfterReplicaResync(t *testing.T) {
	const (
		poll = 500 * time.Millisecond
		ttl  = 6 * time.Second
	)
	ctx := context.Background()
	setup := startReplicaSetup(t, WithPollInterval(poll), WithTTL(ttl))
	a, b := setup.a, setup.b

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer chk.Close()

	setup.leave(t)
	res, err := b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	require.True(t, res.Found)
	require.False(t, res.Pushed, "Cancel.Pushed while the replica is away")
	setup.follow(t, poll/2)
	back := time.Now()

	limit := poll + poll/probeWaitDivisor + 200*time.Millisecond
	select {
	case <-chk.Context().Done():
		t.Logf("run stopped %v after the replica came back", time.Since(back))
	case <-time.After(limit):
		t.Fatalf("run not stopped %v after the replica came back", limit)
	}
}
