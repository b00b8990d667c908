package redistest_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel/internal/redistest"
)

// recordingTB records Skipf and Fatalf instead of passing them to the
// embedded test, and ends the calling goroutine as the real methods do.
// All other methods, Cleanup and TempDir included, go to the real test.
type recordingTB struct {
	testing.TB

	mu      sync.Mutex
	skipped bool
	failed  bool
	message string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped = true
	r.message = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.failed = true
	r.message = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

// runRecorded runs f with a recordingTB on a new goroutine, so that the
// runtime.Goexit in Skipf or Fatalf ends that goroutine only, and returns
// the recording once f has ended.
func runRecorded(t *testing.T, f func(tb testing.TB)) *recordingTB {
	t.Helper()

	recorder := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(recorder)
	}()
	<-done

	recorder.mu.Lock()
	defer recorder.mu.Unlock()
	return recorder
}

// closedAddr returns a loopback address on which nothing listens, so
// connections to it are refused.
func closedAddr(t *testing.T) string {
	t.Helper()

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := listener.Addr().String()
	require.NoError(t, listener.Close())
	return addr
}

// countKeys returns the number of keys that match pattern, using SCAN.
func countKeys(t *testing.T, client *redis.Client, pattern string) int {
	t.Helper()

	ctx := context.Background()
	count := 0
	var cursor uint64
	for {
		keys, next, err := client.Scan(ctx, cursor, pattern, 500).Result()
		require.NoError(t, err)
		count += len(keys)
		if next == 0 {
			return count
		}
		cursor = next
	}
}

func TestServerRepliesToPing(t *testing.T) {
	server := redistest.StartServer(t)

	host, _, err := net.SplitHostPort(server.Addr())
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", host)

	pong, err := server.Client(t).Ping(context.Background()).Result()
	require.NoError(t, err)
	assert.Equal(t, "PONG", pong)
}

func TestServerConfiguration(t *testing.T) {
	client := redistest.StartServer(t).Client(t)
	ctx := context.Background()

	cases := map[string]string{
		"bind":       "127.0.0.1",
		"save":       "",
		"appendonly": "no",
		"daemonize":  "no",
	}
	for name, expected := range cases {
		config, err := client.ConfigGet(ctx, name).Result()
		require.NoError(t, err, "CONFIG GET %s", name)
		assert.Equal(t, expected, config[name], "CONFIG GET %s", name)
	}
}

func TestServerExtraArgs(t *testing.T) {
	client := redistest.StartServer(t, "--maxmemory", "1mb").Client(t)

	config, err := client.ConfigGet(context.Background(), "maxmemory").Result()
	require.NoError(t, err)
	assert.Equal(t, "1048576", config["maxmemory"])
}

func TestServerRestartEmptiesKeys(t *testing.T) {
	server := redistest.StartServer(t)
	client := server.Client(t)
	ctx := context.Background()
	addr := server.Addr()

	require.NoError(t, client.Set(ctx, "key", "value", 0).Err())

	server.Restart()

	assert.Equal(t, addr, server.Addr())
	// The client's pooled connection broke with the restart. go-redis
	// discards it and dials the same address again.
	_, err := client.Get(ctx, "key").Result()
	assert.ErrorIs(t, err, redis.Nil)

	pong, err := server.Client(t).Ping(ctx).Result()
	require.NoError(t, err)
	assert.Equal(t, "PONG", pong)
}

func TestServerStopRefusesConnections(t *testing.T) {
	server := redistest.StartServer(t)
	ctx := context.Background()

	server.Stop()

	_, err := net.DialTimeout("tcp", server.Addr(), time.Second)
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)

	client := server.Client(t)
	assert.Error(t, client.Ping(ctx).Err())

	server.Stop() // A second Stop does nothing.
	server.Restart()

	pong, err := server.Client(t).Ping(ctx).Result()
	require.NoError(t, err)
	assert.Equal(t, "PONG", pong)
}

func TestServerKillRefusesConnections(t *testing.T) {
	server := redistest.StartServer(t)
	client := server.Client(t)
	ctx := context.Background()
	require.NoError(t, client.Set(ctx, "key", "value", 0).Err())

	server.Kill()

	_, err := net.DialTimeout("tcp", server.Addr(), time.Second)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)

	server.Restart()

	_, err = client.Get(ctx, "key").Result()
	assert.ErrorIs(t, err, redis.Nil)
}

func TestServersGetDistinctPorts(t *testing.T) {
	seen := make(map[string]bool)
	for i := 0; i < 3; i++ {
		server := redistest.StartServer(t)
		assert.False(t, seen[server.Addr()], "address %s returned twice", server.Addr())
		seen[server.Addr()] = true

		require.NoError(t, server.Client(t).Ping(context.Background()).Err())
	}
}

func TestStartServerRejectsReservedArg(t *testing.T) {
	recorder := runRecorded(t, func(tb testing.TB) {
		redistest.StartServer(tb, "--port", "6379")
	})

	assert.True(t, recorder.failed)
	assert.Contains(t, recorder.message, "--port")
}

func TestStartServerReportsLogTail(t *testing.T) {
	require, _ := strconv.ParseBool(os.Getenv(redistest.RequireEnv))
	if _, err := exec.LookPath("redis-server"); err != nil && !require {
		t.Skip("redis-server is not on PATH; install it, or set " + redistest.RequireEnv + "=1 to fail instead")
	}
	recorder := runRecorded(t, func(tb testing.TB) {
		redistest.StartServer(tb, "--no-such-directive", "1")
	})

	assert.True(t, recorder.failed)
	assert.Contains(t, recorder.message, "exited before it replied to PING")
	// redis-server prints the directive it rejects.
	assert.Contains(t, recorder.message, "no-such-directive")
}

func TestStartServerSkipsWithoutBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv(redistest.RequireEnv, "")

	recorder := runRecorded(t, func(tb testing.TB) { redistest.StartServer(tb) })

	assert.True(t, recorder.skipped)
	assert.False(t, recorder.failed)
	assert.Contains(t, recorder.message, "redis-server was not found on PATH")
}

func TestStartServerFailsWithoutBinaryWhenRequired(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv(redistest.RequireEnv, "true")

	recorder := runRecorded(t, func(tb testing.TB) { redistest.StartServer(tb) })

	assert.True(t, recorder.failed)
	assert.False(t, recorder.skipped)
	assert.Contains(t, recorder.message, "redis-server was not found on PATH")
}

func TestSharedRepliesToPing(t *testing.T) {
	client := redistest.Shared(t)

	pong, err := client.Ping(context.Background()).Result()
	require.NoError(t, err)
	assert.Equal(t, "PONG", pong)
}

func TestSharedSkipsWhenRefused(t *testing.T) {
	addr := closedAddr(t)
	t.Setenv(redistest.AddrEnv, addr)
	t.Setenv(redistest.RequireEnv, "")

	recorder := runRecorded(t, func(tb testing.TB) { redistest.Shared(tb) })

	assert.True(t, recorder.skipped)
	assert.False(t, recorder.failed)
	assert.Contains(t, recorder.message, addr)
	assert.Contains(t, recorder.message, "Start redis-server")
	assert.Contains(t, recorder.message, redistest.AddrEnv)
	assert.Contains(t, recorder.message, redistest.RequireEnv+"=1")
}

func TestSharedFailsWhenRequired(t *testing.T) {
	addr := closedAddr(t)
	t.Setenv(redistest.AddrEnv, addr)
	t.Setenv(redistest.RequireEnv, "1")

	recorder := runRecorded(t, func(tb testing.TB) { redistest.Shared(tb) })

	assert.True(t, recorder.failed)
	assert.False(t, recorder.skipped)
	assert.Contains(t, recorder.message, addr)
	assert.Contains(t, recorder.message, redistest.RequireEnv+" is set")
}

func TestSharedSkipsWhenServerHangs(t *testing.T) {
	addr := redistest.SilentServer(t)
	t.Setenv(redistest.AddrEnv, addr)
	t.Setenv(redistest.RequireEnv, "")

	start := time.Now()
	recorder := runRecorded(t, func(tb testing.TB) { redistest.Shared(tb) })
	elapsed := time.Since(start)

	assert.True(t, recorder.skipped)
	assert.Contains(t, recorder.message, addr)
	// The PING timeout is 1 s, and the rest is a margin for slow machines.
	assert.Less(t, elapsed, 3*time.Second)
}

func TestUniquePrefixDeletesKeys(t *testing.T) {
	client := redistest.Shared(t)
	ctx := context.Background()

	// The outer prefix's key must survive the cleanup of the inner one.
	outer := redistest.UniquePrefix(t)
	require.NoError(t, client.Set(ctx, outer+":keep", "1", 0).Err())

	var inner string
	t.Run("writer", func(t *testing.T) {
		inner = redistest.UniquePrefix(t)
		assert.Regexp(t, `^sctest:[0-9a-f]{16}$`, inner)

		// More keys than one SCAN call returns, so the cleanup must
		// follow the cursor.
		pipe := client.Pipeline()
		for i := 0; i < 1200; i++ {
			pipe.Set(ctx, fmt.Sprintf("%s:%d", inner, i), i, 0)
		}
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
		require.Equal(t, 1200, countKeys(t, client, inner+"*"))
	})

	require.NotEmpty(t, inner)
	assert.NotEqual(t, outer, inner)
	assert.False(t, strings.HasPrefix(outer, inner))
	assert.Equal(t, 0, countKeys(t, client, inner+"*"))

	exists, err := client.Exists(ctx, outer+":keep").Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), exists)
}
