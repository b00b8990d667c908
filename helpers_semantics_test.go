package streamcancel_test

import (
	"fmt"
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

// sampleTTLs samples the PTTL of every key under e's prefix, in one
// pipeline per sample, until the returned stop is called. stop returns the
// number of samples and one line per key that had no TTL or, when longest
// is positive, one longer than longest.
func sampleTTLs(e *env, c *redis.Client, longest time.Duration) (stop func() (samples int, violations []string)) {
	var violations []string
	done := make(chan struct{})
	samples := make(chan int, 1)
	go func() {
		n := 0
		defer func() { samples <- n }()
		for {
			select {
			case <-done:
				return
			default:
			}
			keys, err := c.Keys(ctx, e.prefix+":*").Result()
			if err != nil {
				violations = append(violations, "KEYS failed: "+err.Error())
				return
			}
			pipe := c.Pipeline()
			pttls := make([]*redis.DurationCmd, len(keys))
			for i, key := range keys {
				pttls[i] = pipe.PTTL(ctx, key)
			}
			_, _ = pipe.Exec(ctx)
			for i, key := range keys {
				// -2 means the key expired or was deleted after KEYS, and
				// -1 that it has no TTL. 0 is a TTL that ends within the
				// current millisecond.
				pttl, err := pttls[i].Result()
				expired := pttl == -2 || pttl == -2*time.Millisecond
				if err != nil || (pttl < 0 && !expired) || (longest > 0 && pttl > longest) {
					violations = append(violations, fmt.Sprintf("key %q: PTTL %v, error %v", key, pttl, err))
				}
			}
			n++
		}
	}()
	return func() (int, []string) {
		close(done)
		n := <-samples
		return n, violations
	}
}
