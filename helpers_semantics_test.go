package streamcancel_test

import (
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel/internal/redistest"
)

// miniredisT starts a miniredis for one subtest and points e at it.
func miniredisT(t *testing.T, e *env) *miniredis.Miniredis {
	m := miniredis.RunT(t)
	e.addr, e.mini = m.Addr(), m
	return m
}

// eachRealRedis runs fn on the shared real Redis only, under a key prefix
// of its own, for tests whose miniredis half needs its own steps.
func eachRealRedis(t *testing.T, fn func(t *testing.T, e *env)) {
	c := redistest.Shared(t)
	fn(t, &env{addr: c.Options().Addr, prefix: redistest.UniquePrefix(t)})
}

// assertKeysExpire checks that every key under e's prefix has a TTL of at
// most a minute, the longest lease the library gives its records.
func assertKeysExpire(t *testing.T, e *env, c *redis.Client) {
	t.Helper()
	for _, key := range e.allKeys(t, c) {
		ttl, err := c.PTTL(ctx, key).Result()
		require.NoError(t, err)
		assert.True(t, ttl > 0 && ttl <= time.Minute, "TTL of %s: got %v, want (0, 1m]", key, ttl)
	}
}
