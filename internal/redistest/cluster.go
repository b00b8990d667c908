package redistest

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// clusterSlots is the number of hash slots of a Redis Cluster.
	clusterSlots = 16384

	// clusterNodeTimeout is the cluster-node-timeout of the test clusters
	// in milliseconds. A replica starts a failover of a primary that has
	// not replied for this long.
	clusterNodeTimeout = 1000

	// clusterReadyTimeout bounds the wait for a new cluster to be ok.
	clusterReadyTimeout = 20 * time.Second
)

// Cluster is a Redis Cluster of three primaries with one replica each,
// every node a Server of its own on 127.0.0.1. The nodes announce
// 127.0.0.1 and talk to each other on loopback only.
//
// Primaries and Replicas list the nodes in their roles at creation; a
// failover swaps roles without changing the lists. The methods must be
// called from the goroutine running the test that started the cluster.
type Cluster struct {
	t testing.TB

	// Primaries[i] serves the i-th third of the slots at creation, and
	// Replicas[i] replicates it.
	Primaries []*Server
	Replicas  []*Server
}

// StartCluster starts six cluster-enabled redis-server processes. It
// assigns the slots evenly to three of them and makes each of the other
// three a replica of one primary. Then it waits until every node reports
// cluster_state:ok, every slot is served and every replica is in sync.
// t.Cleanup kills the nodes.
//
// StartCluster skips or fails the test as StartServer does when
// redis-server is missing. It fails the test when the cluster is not ready
// within 20 seconds.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()

	args := []string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(clusterNodeTimeout),
		"--cluster-announce-ip", "127.0.0.1",
		// A replica that lost its primary a moment ago may still take
		// over, so a killed primary always fails over.
		"--cluster-replica-validity-factor", "0",
		// Replicas sync at once instead of after the default 5s.
		"--repl-diskless-sync-delay", "0",
		// CLUSTER SLOTS lists a replica only once its replication offset
		// is above 0, which the primary's PING to its replicas moves.
		"--repl-ping-replica-period", "1",
	}
	c := &Cluster{t: t}
	for i := 0; i < 3; i++ {
		c.Primaries = append(c.Primaries, StartServer(t, args...))
	}
	for i := 0; i < 3; i++ {
		c.Replicas = append(c.Replicas, StartServer(t, args...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	if err := c.create(ctx); err != nil {
		t.Fatalf("redistest: failed to create the cluster: %v", err)
	}
	if err := c.waitReady(ctx, true); err != nil {
		t.Fatalf("redistest: the cluster did not become ready within %v: %v", clusterReadyTimeout, err)
	}
	return c
}

// Nodes returns all six nodes, primaries first.
func (c *Cluster) Nodes() []*Server {
	return append(append([]*Server(nil), c.Primaries...), c.Replicas...)
}

// Addrs returns the addresses of all six nodes, primaries first.
func (c *Cluster) Addrs() []string {
	var addrs []string
	for _, s := range c.Nodes() {
		addrs = append(addrs, s.Addr())
	}
	return addrs
}

// Client returns a new cluster client that knows every node's address,
// with go-redis default options, closed in t.Cleanup.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()

	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// WaitReady waits until every running node reports cluster_state:ok and
// lists every slot in CLUSTER SLOTS, and all of them list the same primary
// for each slot. Use it after a failover. It fails the test after timeout.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.waitReady(ctx, false); err != nil {
		c.t.Fatalf("redistest: the cluster was not ready within %v: %v", timeout, err)
	}
}

// create joins the nodes into one cluster: slots to the primaries, MEET
// from the first node to all others, then REPLICATE on each replica.
func (c *Cluster) create(ctx context.Context) error {
	ids := make(map[*Server]string)
	for _, s := range c.Nodes() {
		id, err := nodeDo(ctx, s, "CLUSTER", "MYID").Text()
		if err != nil {
			return fmt.Errorf("CLUSTER MYID on %s: %w", s.Addr(), err)
		}
		ids[s] = id
	}

	for i, s := range c.Primaries {
		first := i * clusterSlots / len(c.Primaries)
		last := (i+1)*clusterSlots/len(c.Primaries) - 1
		if err := nodeDo(ctx, s, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
			return fmt.Errorf("CLUSTER ADDSLOTSRANGE %d %d on %s: %w", first, last, s.Addr(), err)
		}
	}

	first := c.Primaries[0]
	for _, s := range c.Nodes()[1:] {
		if err := nodeDo(ctx, first, "CLUSTER", "MEET", "127.0.0.1", s.port).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET %s on %s: %w", s.Addr(), first.Addr(), err)
		}
	}

	// CLUSTER REPLICATE fails until the gossip from MEET has reached the
	// replica.
	for i, s := range c.Replicas {
		primary := ids[c.Primaries[i]]
		err := retry(ctx, func() error {
			return nodeDo(ctx, s, "CLUSTER", "REPLICATE", primary).Err()
		})
		if err != nil {
			return fmt.Errorf("CLUSTER REPLICATE %s on %s: %w", primary, s.Addr(), err)
		}
	}
	return nil
}

// waitReady waits until the running nodes agree on a healthy cluster, see
// WaitReady. With replicas set it also waits until every primary has a
// replica in sync.
func (c *Cluster) waitReady(ctx context.Context, replicas bool) error {
	return retry(ctx, func() error {
		var owners string
		for _, s := range c.Nodes() {
			if !s.running() {
				continue
			}
			info, err := nodeDo(ctx, s, "CLUSTER", "INFO").Text()
			if err != nil {
				return fmt.Errorf("CLUSTER INFO on %s: %w", s.Addr(), err)
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
				return fmt.Errorf("%s reports %q", s.Addr(), strings.ReplaceAll(info, "\r\n", " "))
			}

			slots, err := slotOwners(ctx, s, replicas)
			if err != nil {
				return err
			}
			if owners != "" && slots != owners {
				return fmt.Errorf("the nodes do not agree on the slot owners yet: %s against %s", slots, owners)
			}
			owners = slots
		}
		return nil
	})
}

// slotOwners returns a description of which primary serves which slots in
// s's view, and fails unless every slot is served. With replicas set it
// also fails unless each slot range lists a replica.
func slotOwners(ctx context.Context, s *Server, replicas bool) (string, error) {
	ranges, err := nodeClient(s).ClusterSlots(ctx).Result()
	if err != nil {
		return "", fmt.Errorf("CLUSTER SLOTS on %s: %w", s.Addr(), err)
	}

	covered := 0
	var parts []string
	for _, r := range ranges {
		covered += r.End - r.Start + 1
		if replicas && len(r.Nodes) < 2 {
			return "", fmt.Errorf("%s sees no replica for slots %d-%d yet", s.Addr(), r.Start, r.End)
		}
		for _, n := range r.Nodes {
			if !strings.HasPrefix(n.Addr, "127.0.0.1:") {
				return "", fmt.Errorf("%s announces node %s, which is not on 127.0.0.1", s.Addr(), n.Addr)
			}
		}
		parts = append(parts, fmt.Sprintf("%d-%d@%s", r.Start, r.End, r.Nodes[0].Addr))
	}
	if covered != clusterSlots {
		return "", fmt.Errorf("%s sees %d of %d slots served", s.Addr(), covered, clusterSlots)
	}
	sort.Strings(parts)
	return strings.Join(parts, ","), nil
}

// nodeDo sends one command to the node s on a connection of its own.
func nodeDo(ctx context.Context, s *Server, args ...interface{}) *redis.Cmd {
	return nodeClient(s).Do(ctx, args...)
}

func nodeClient(s *Server) *oneShot {
	return &oneShot{addr: s.Addr()}
}

// oneShot sends each command on a client of its own that it closes after
// the reply, so the harness leaves no pool or goroutine behind.
type oneShot struct {
	addr string
}

func (o *oneShot) client() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:         o.addr,
		DialTimeout:  time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
		PoolSize:     1,
		MaxRetries:   -1,
	})
}

func (o *oneShot) Do(ctx context.Context, args ...interface{}) *redis.Cmd {
	c := o.client()
	defer c.Close()
	return c.Do(ctx, args...)
}

func (o *oneShot) ClusterSlots(ctx context.Context) *redis.ClusterSlotsCmd {
	c := o.client()
	defer c.Close()
	return c.ClusterSlots(ctx)
}

// retry calls fn every 50ms until it succeeds or ctx ends, and then
// returns fn's last error.
func retry(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
