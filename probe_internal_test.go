package streamcancel

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
)

// A PONG proves earlier pushes only where the subscriber and the scripts
// reach one server: a *redis.Client of one address. A Sentinel client's
// subscriber may stay on a demoted primary, and on a cluster a push
// crosses the cluster bus.
func TestProvesByPing(t *testing.T) {
	plain := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer plain.Close()
	failover := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "primary", SentinelAddrs: []string{"127.0.0.1:1"}})
	defer failover.Close()
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cluster.Close()

	assert.True(t, provesByPing(plain), "*redis.Client")
	assert.False(t, provesByPing(failover), "redis.NewFailoverClient")
	assert.False(t, provesByPing(cluster), "*redis.ClusterClient")
}

// A probe waits PollInterval/50 for its PONG, and at least a millisecond.
func TestPongWait(t *testing.T) {
	for poll, want := range map[time.Duration]time.Duration{
		10 * time.Millisecond:  time.Millisecond,
		100 * time.Millisecond: 2 * time.Millisecond,
		time.Second:            20 * time.Millisecond,
	} {
		c := config{pollInterval: poll}
		assert.Equal(t, want, c.pongWait(), "PollInterval %v", poll)
	}
}
