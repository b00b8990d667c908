package streamcancel

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel/internal/redistest"
)

// pollBenchRuns is the number of local runs in a benchmarked poll pass.
const pollBenchRuns = 1000

// BenchmarkScaleOut compares one Redis with a cluster of three primaries
// and three replicas, all on loopback:
//
//   - cancel: Registry.Cancel on one node until the run's context on the
//     other node is done. cancel-call-ns/op is the Cancel call alone.
//   - poll: one background pass that reads the records of 1,000 runs.
//   - push-publish and push-spublish: the two ways to push a cancel on a
//     cluster, with raw commands. The first stores the record and sends a
//     classic PUBLISH in one script, as the registry does. The second runs
//     the script and then SPUBLISH, because a script cannot publish on a
//     shard channel of another slot. ns/op runs until the subscriber has
//     the message.
//
// bus-msgs/op counts the Pub/Sub messages that the nodes sent to each
// other over the cluster bus.
func BenchmarkScaleOut(b *testing.B) {
	single := redistest.StartServer(b)
	cluster := redistest.StartCluster(b)
	clients := map[string]func() redis.UniversalClient{
		"single": func() redis.UniversalClient {
			return single.Client(b)
		},
		"cluster": func() redis.UniversalClient {
			return cluster.Client(b)
		},
	}

	for _, name := range []string{"single", "cluster"} {
		newClient := clients[name]
		b.Run(name+"/cancel", func(b *testing.B) {
			benchCancel(b, newClient, cluster)
		})
		b.Run(name+"/poll", func(b *testing.B) {
			benchPoll(b, newClient())
		})
	}
	b.Run("cluster/push-publish", func(b *testing.B) {
		benchPush(b, cluster, false)
	})
	b.Run("cluster/push-spublish", func(b *testing.B) {
		benchPush(b, cluster, true)
	})
}

func benchCancel(b *testing.B, newClient func() redis.UniversalClient, cluster *redistest.Cluster) {
	a := benchRegistry(b, newClient(), "node-a")
	other := benchRegistry(b, newClient(), "node-b")
	require.Eventually(b, a.pushReady.Load, 5*time.Second, time.Millisecond, "subscriber of node-a")
	bus := busMessages(b, cluster)

	var calls time.Duration
	delivered := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		id := "run-" + strconv.Itoa(i)
		chk, err := a.Start(context.Background(), id)
		require.NoError(b, err)
		b.StartTimer()

		start := time.Now()
		res, err := other.Cancel(context.Background(), id)
		calls += time.Since(start)
		require.NoError(b, err)
		require.True(b, res.Found)
		<-chk.Context().Done()
		delivered[i] = time.Since(start)

		b.StopTimer()
		require.NoError(b, chk.Close())
		b.StartTimer()
	}
	b.ReportMetric(float64(calls.Nanoseconds())/float64(b.N), "cancel-call-ns/op")
	reportPercentiles(b, delivered)
	if _, ok := a.rdb.(*redis.ClusterClient); ok {
		b.ReportMetric(float64(busMessages(b, cluster)-bus)/float64(b.N), "bus-msgs/op")
	}
}

func benchPoll(b *testing.B, rdb redis.UniversalClient) {
	r := benchRegistry(b, rdb, "node-a")
	for i := 0; i < pollBenchRuns; i++ {
		chk, err := r.Start(context.Background(), "run-"+strconv.Itoa(i))
		require.NoError(b, err)
		b.Cleanup(func() { _ = chk.Close() })
	}
	runs := r.snapshot()
	require.Len(b, runs, pollBenchRuns)

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.syncRuns(runs, modeRead)
	}
	b.StopTimer()
	require.Zero(b, r.stats.errors[kindSync].Load(), "failed poll passes")
}

// benchPush pushes with raw commands on the cluster, see BenchmarkScaleOut.
func benchPush(b *testing.B, cluster *redistest.Cluster, sharded bool) {
	ctx := context.Background()
	rdb := cluster.Client(b)
	const channel = "bench:node:node-a"

	var ps *redis.PubSub
	script := redis.NewScript(`redis.call('HSET', KEYS[1], 'cancel', ARGV[2]) return redis.call('PUBLISH', ARGV[1], ARGV[2])`)
	if sharded {
		ps = cluster.Client(b).SSubscribe(ctx, channel)
		script = redis.NewScript(`redis.call('HSET', KEYS[1], 'cancel', ARGV[2]) return 0`)
	} else {
		ps = cluster.Client(b).Subscribe(ctx, channel)
	}
	defer ps.Close()
	_, err := ps.Receive(ctx)
	require.NoError(b, err)
	require.NoError(b, script.Load(ctx, rdb).Err())
	bus := busMessages(b, cluster)

	var calls time.Duration
	delivered := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		key := runKey("bench", "run-"+strconv.Itoa(i))
		start := time.Now()
		require.NoError(b, script.Run(ctx, rdb, []string{key}, channel, "token").Err())
		if sharded {
			require.NoError(b, rdb.SPublish(ctx, channel, "token").Err())
		}
		calls += time.Since(start)

		msg, err := ps.ReceiveMessage(ctx)
		require.NoError(b, err)
		require.Equal(b, "token", msg.Payload)
		delivered[i] = time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(calls.Nanoseconds())/float64(b.N), "cancel-call-ns/op")
	reportPercentiles(b, delivered)
	b.ReportMetric(float64(busMessages(b, cluster)-bus)/float64(b.N), "bus-msgs/op")
}

// reportPercentiles reports the median and the 99th percentile of the
// times from a cancel's start until the run or subscriber had it, and the
// percentage of those times above 10ms.
func reportPercentiles(b *testing.B, delivered []time.Duration) {
	sort.Slice(delivered, func(i, j int) bool { return delivered[i] < delivered[j] })
	b.ReportMetric(float64(delivered[len(delivered)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(delivered[len(delivered)*99/100].Nanoseconds()), "p99-ns")

	slow := sort.Search(len(delivered), func(i int) bool { return delivered[i] > 10*time.Millisecond })
	b.ReportMetric(100*float64(len(delivered)-slow)/float64(len(delivered)), "over-10ms-%")
}

// benchRegistry returns a registry whose background passes stay out of the
// way of a benchmark, closed in b.Cleanup.
func benchRegistry(b *testing.B, rdb redis.UniversalClient, node string) *Registry {
	r, err := NewRegistry(rdb, WithNodeID(node), WithKeyPrefix("bench-"+strings.ReplaceAll(b.Name(), "/", "-")),
		WithPollInterval(time.Hour), WithTTL(time.Hour))
	require.NoError(b, err)
	b.Cleanup(func() { _ = r.Close() })
	return r
}

// busMessages returns the Pub/Sub messages, classic and sharded, that the
// running nodes of cluster have sent over the cluster bus so far.
func busMessages(b *testing.B, cluster *redistest.Cluster) int64 {
	var total int64
	for _, s := range cluster.Nodes() {
		info, err := s.Client(b).ClusterInfo(context.Background()).Result()
		require.NoError(b, err)
		for _, line := range strings.Split(info, "\r\n") {
			for _, field := range []string{"cluster_stats_messages_publish_sent:", "cluster_stats_messages_publishshard_sent:"} {
				if v, ok := strings.CutPrefix(line, field); ok {
					n, err := strconv.ParseInt(v, 10, 64)
					require.NoError(b, err)
					total += n
				}
			}
		}
	}
	return total
}
