package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// SentinelMaster is the name under which the Sentinel of a
	// SentinelGroup monitors the primary.
	SentinelMaster = "streamcancel-test"

	// sentinelDownAfter is how long, in milliseconds, the primary must
	// be silent before the Sentinel considers it down and fails it over.
	sentinelDownAfter = 1000

	// sentinelReadyTimeout bounds the wait for a new group to be ready.
	sentinelReadyTimeout = 15 * time.Second
)

// SentinelGroup is a primary, a replica of it and one Sentinel that
// monitors the primary with a quorum of one, each a Server of its own on
// 127.0.0.1. Primary and Replica are the roles at creation. The methods
// must be called from the goroutine running the test that started the
// group.
type SentinelGroup struct {
	t testing.TB

	Primary  *Server
	Replica  *Server
	Sentinel *Server
}

// StartSentinel starts a primary, a replica and a Sentinel, and waits
// until the replica is in sync and the Sentinel monitors both. The Sentinel
// considers the primary down after one second of silence. t.Cleanup kills
// all three.
//
// StartSentinel skips or fails the test as StartServer does when
// redis-server is missing, and fails it when the group is not ready within
// 15 seconds.
func StartSentinel(t testing.TB) *SentinelGroup {
	t.Helper()

	g := &SentinelGroup{t: t}
	// The replica syncs at once instead of after the default 5s.
	g.Primary = StartServer(t, "--repl-diskless-sync-delay", "0")
	if g.Primary == nil {
		return g
	}
	g.Replica = StartServer(t, "--replicaof", "127.0.0.1", strconv.Itoa(g.Primary.port))
	g.Sentinel = startServer(t, true, nil)
	if g.Sentinel == nil {
		return g
	}

	ctx, cancel := context.WithTimeout(context.Background(), sentinelReadyTimeout)
	defer cancel()
	if err := g.setUp(ctx); err != nil {
		t.Fatalf("redistest: the Sentinel group was not ready within %v: %v", sentinelReadyTimeout, err)
	}
	return g
}

// Client returns a new failover client of the group, as
// redis.NewFailoverClient makes it with default options, closed in
// t.Cleanup.
func (g *SentinelGroup) Client(t testing.TB) *redis.Client {
	t.Helper()

	client := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    SentinelMaster,
		SentinelAddrs: []string{g.Sentinel.Addr()},
	})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// MasterAddr returns the address of the primary as the Sentinel reports it.
func (g *SentinelGroup) MasterAddr() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()

	addr, err := nodeDo(ctx, g.Sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SentinelMaster).StringSlice()
	if err != nil {
		return "", err
	}
	if len(addr) != 2 {
		return "", fmt.Errorf("unexpected reply to SENTINEL GET-MASTER-ADDR-BY-NAME: %q", addr)
	}
	return addr[0] + ":" + addr[1], nil
}

// setUp waits for the replica's sync, then makes the Sentinel monitor the
// primary and waits until it has found the replica.
func (g *SentinelGroup) setUp(ctx context.Context) error {
	err := retry(ctx, func() error {
		info, err := nodeDo(ctx, g.Replica, "INFO", "replication").Text()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("the replica on %s is not in sync yet", g.Replica.Addr())
		}
		return nil
	})
	if err != nil {
		return err
	}

	steps := [][]interface{}{
		{"SENTINEL", "MONITOR", SentinelMaster, "127.0.0.1", g.Primary.port, 1},
		{"SENTINEL", "SET", SentinelMaster, "down-after-milliseconds", sentinelDownAfter},
		{"SENTINEL", "SET", SentinelMaster, "failover-timeout", 5000},
	}
	for _, args := range steps {
		if err := nodeDo(ctx, g.Sentinel, args...).Err(); err != nil {
			return fmt.Errorf("%v on the Sentinel: %w", args, err)
		}
	}

	return retry(ctx, func() error {
		replicas, err := nodeDo(ctx, g.Sentinel, "SENTINEL", "REPLICAS", SentinelMaster).Slice()
		if err != nil {
			return err
		}
		if len(replicas) != 1 {
			return fmt.Errorf("the Sentinel knows %d replicas, want 1", len(replicas))
		}
		return nil
	})
}
