// Package redistest connects tests to real Redis servers.
//
// Shared returns a client for a Redis server that many tests use at once,
// so each test keeps its keys under a prefix from UniquePrefix. StartServer
// starts a private redis-server that a test may stop and restart to
// simulate a failing node. StartCluster starts a Redis Cluster of three
// primaries and three replicas, and StartSentinel a primary, a replica and
// a Sentinel, all from such servers.
//
// When the Redis needed is not available, the helpers skip the test, unless
// the environment variable STREAMCANCEL_REQUIRE_REDIS is set to 1, which
// makes them fail it. CI sets that variable so that a missing Redis cannot
// turn the suite green by skipping it.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// AddrEnv is the environment variable that sets the host:port of the
	// shared Redis server.
	AddrEnv = "REDIS_ADDR"

	// DefaultAddr is the shared Redis server's address when AddrEnv is
	// unset or empty.
	DefaultAddr = "127.0.0.1:6379"

	// RequireEnv is the environment variable that turns skips for a missing
	// Redis server or redis-server binary into test failures. Any value that
	// strconv.ParseBool accepts as true, such as 1, enables it.
	RequireEnv = "STREAMCANCEL_REQUIRE_REDIS"
)

// sharedPingTimeout bounds the PING that Shared sends to check that the
// shared server is up.
const sharedPingTimeout = time.Second

// cleanupTimeout bounds the key deletion that UniquePrefix registers.
const cleanupTimeout = 10 * time.Second

// Shared returns a new client for the shared Redis server at the address in
// REDIS_ADDR, or at 127.0.0.1:6379 when that is unset. First it sends PING
// on a separate connection, which must get PONG within one second. If it
// does not, Shared skips the test, or fails it when
// STREAMCANCEL_REQUIRE_REDIS is set. The returned client has go-redis
// default options.
//
// The client is closed in t.Cleanup. Other tests use the same server at the
// same time, so a test must keep its keys under a prefix from UniquePrefix
// and must never flush, stop or reconfigure the server.
//
// Shared may be called from parallel tests. Like t.Skipf and t.Fatalf, it
// must be called from the goroutine running the test.
func Shared(t testing.TB) *redis.Client {
	t.Helper()

	addr := os.Getenv(AddrEnv)
	if addr == "" {
		addr = DefaultAddr
	}

	if err := probe(addr); err != nil {
		unavailable(t, "redistest: the shared Redis server at %s did not reply to PING within %v: %v. "+
			"Start redis-server on %s, or set %s to the host:port of a Redis server that tests may write to.",
			addr, sharedPingTimeout, err, DefaultAddr, AddrEnv)
		return nil
	}

	client := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// probe sends PING to addr on a client of its own and closes it. Without
// ContextTimeoutEnabled, go-redis v9.0.0 sets socket deadlines from
// ReadTimeout and WriteTimeout (3 s by default) and ignores the context
// deadline, so a server that accepts connections but never replies would
// hold the PING for 3 s.
func probe(addr string) error {
	client := redis.NewClient(&redis.Options{
		Addr:                  addr,
		DialTimeout:           sharedPingTimeout,
		ReadTimeout:           sharedPingTimeout,
		WriteTimeout:          sharedPingTimeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	})
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), sharedPingTimeout)
	defer cancel()
	return client.Ping(ctx).Err()
}

// UniquePrefix returns a new key prefix of the form "sctest:" followed by
// 16 random hexadecimal digits. All prefixes have the same length, so the
// keys of one prefix never match the pattern of another.
//
// In t.Cleanup, after the test and its subtests have finished, UniquePrefix
// deletes every key on the shared server whose name starts with the prefix,
// using SCAN and DEL. It reports a failed deletion with t.Errorf. It calls
// Shared for its own client, so it skips or fails the test in the same
// cases as Shared.
//
// The deletion only covers the shared server. Keys on a Server from
// StartServer disappear when that server stops.
func UniquePrefix(t testing.TB) string {
	t.Helper()

	client := Shared(t)

	var random [8]byte
	if _, err := rand.Read(random[:]); err != nil {
		t.Fatalf("redistest: failed to read random bytes for a key prefix: %v", err)
	}
	prefix := "sctest:" + hex.EncodeToString(random[:])

	// Cleanup functions run last-in first-out, so this one runs before
	// the one in Shared that closes client.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := deleteKeys(ctx, client, prefix+"*"); err != nil {
			t.Errorf("redistest: failed to delete the keys under prefix %q on %s: %v",
				prefix, client.Options().Addr, err)
		}
	})
	return prefix
}

// deleteKeys deletes the keys that match the glob pattern.
func deleteKeys(ctx context.Context, client *redis.Client, pattern string) error {
	var cursor uint64
	for {
		keys, next, err := client.Scan(ctx, cursor, pattern, 500).Result()
		if err != nil {
			return fmt.Errorf("SCAN %s: %w", pattern, err)
		}
		if len(keys) > 0 {
			if err := client.Del(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("DEL of %d keys: %w", len(keys), err)
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// unavailable skips the test, or fails it when RequireEnv is true.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()

	if required() {
		t.Fatalf(format+" "+RequireEnv+" is set, so this is a failure, not a skip.", args...)
		return
	}
	t.Skipf(format+" Set "+RequireEnv+"=1 to fail instead of skipping.", args...)
}

// required reports whether RequireEnv is set to a true value.
func required() bool {
	value, err := strconv.ParseBool(os.Getenv(RequireEnv))
	return err == nil && value
}
