package redistest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel/internal/redistest"
)

// StartCluster returns a cluster of three primaries and three replicas
// that serves every slot, announces only 127.0.0.1 and accepts writes
// through a cluster client.
func TestStartClusterServesEverySlot(t *testing.T) {
	c := redistest.StartCluster(t)
	ctx := context.Background()

	client := c.Client(t)
	slots, err := client.ClusterSlots(ctx).Result()
	require.NoError(t, err)
	covered := 0
	for _, r := range slots {
		covered += r.End - r.Start + 1
		require.Len(t, r.Nodes, 2, "nodes serving slots %d-%d", r.Start, r.End)
		for _, n := range r.Nodes {
			require.True(t, strings.HasPrefix(n.Addr, "127.0.0.1:"), "node address %s", n.Addr)
		}
	}
	require.Equal(t, 16384, covered, "slots served")
	require.Len(t, slots, 3, "slot ranges")

	for _, key := range []string{"a", "b", "c", "d", "e"} {
		require.NoError(t, client.Set(ctx, key, "v", time.Minute).Err())
	}
}

// StartSentinel returns a group whose failover client writes to the
// primary, and the Sentinel names the primary.
func TestStartSentinelMonitorsPrimary(t *testing.T) {
	g := redistest.StartSentinel(t)
	ctx := context.Background()

	addr, err := g.MasterAddr()
	require.NoError(t, err)
	require.Equal(t, g.Primary.Addr(), addr)

	client := g.Client(t)
	require.NoError(t, client.Set(ctx, "k", "v", time.Minute).Err())
	got, err := g.Primary.Client(t).Get(ctx, "k").Result()
	require.NoError(t, err)
	require.Equal(t, "v", got)
}
