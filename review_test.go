package streamcancel_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
	"github.com/streamcancel/streamcancel/internal/redistest"
)

// The tests in this file cover races in the run lifecycle that could leave
// a marker in Redis after its run is gone, and Close's time bound.

// registerArg is how the "register" mode argument of sync.lua appears in
// a RESP request. The script source in SCRIPT LOAD and EVAL contains the
// word only in quotes, so it does not match.
var registerArg = []byte("$8\r\nregister\r\n")

// slowRegister is a go-redis dialer whose connections delay a write that
// carries sync.lua's register mode, as a slow network path between the
// client and Redis would. The delay applies only while armed is true.
type slowRegister struct {
	delay time.Duration
	armed atomic.Bool

	// writing receives a value when a delayed write begins, if a receiver
	// is ready.
	writing chan struct{}
}

func newSlowRegister(delay time.Duration) *slowRegister {
	return &slowRegister{delay: delay, writing: make(chan struct{}, 1)}
}

func (s *slowRegister) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &slowRegisterConn{Conn: conn, owner: s}, nil
}

// client returns a client of addr that dials through s, closed when the
// test ends.
func (s *slowRegister) client(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, Dialer: s.dial})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type slowRegisterConn struct {
	net.Conn
	owner *slowRegister
}

func (c *slowRegisterConn) Write(b []byte) (int, error) {
	if c.owner.armed.Load() && bytes.Contains(b, registerArg) {
		// Only the first matching write is delayed.
		c.owner.armed.Store(false)
		select {
		case c.owner.writing <- struct{}{}:
		default:
		}
		time.Sleep(c.owner.delay)
	}
	return c.Conn.Write(b)
}

// A Start that fails open after 500ms leaves its registration in flight.
// When the run is closed before that call returns, the marker the call
// writes afterwards is deleted once it returns.
func TestStartTimeoutThenCheckerClose(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		slow := newSlowRegister(900 * time.Millisecond)
		a := e.registryOn(t, slow.client(t, e.addr), "node-a")
		b := e.registry(t, "node-b")
		c := e.client(t)
		waitSubscribed(t, a)

		slow.armed.Store(true)
		begin := time.Now()
		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err, "Start fails open")
		require.GreaterOrEqual(t, time.Since(begin), 450*time.Millisecond, "Start returned before its 500ms bound")
		assert.NoError(t, chk.Close(), "Checker.Close of a run that failed open")

		// The delayed registration lands about 400ms after Close.
		time.Sleep(time.Second)
		assert.Empty(t, e.keys(t, c), "markers 1s after the only run was closed")
		_, err = b.Start(ctx, "chat-1")
		assert.NoError(t, err, "Start on another node after the only run was closed")
	})
}

// A run that failed open and was closed while its registration was in
// flight is still found by Registry.Close, which deletes the marker that
// the late registration wrote.
func TestStartTimeoutThenRegistryClose(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		slow := newSlowRegister(900 * time.Millisecond)
		rdb := slow.client(t, e.addr)
		a, err := streamcancel.NewRegistry(rdb, streamcancel.WithNodeID("node-a"), streamcancel.WithKeyPrefix(e.prefix))
		require.NoError(t, err)
		c := e.client(t)
		waitSubscribed(t, a)

		slow.armed.Store(true)
		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err, "Start fails open")
		require.NoError(t, chk.Close())

		assert.NoError(t, a.Close(), "Registry.Close with a registration in flight for 400ms")
		time.Sleep(100 * time.Millisecond)
		assert.Empty(t, e.keys(t, c), "markers after Checker.Close and Registry.Close returned")
	})
}

// A background pass registers a run whose marker vanished. The run is
// closed while the pass is in flight, and Registry.Close begins before
// the pass has its reply. The pass deletes the marker it created for the
// closed run, even though Close has ended the registry's context.
func TestStaleReleaseSurvivesClose(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		// The delay is shorter than Close's 500ms drain, so the pass ends
		// within the drain and Close reports no call in flight.
		slow := newSlowRegister(300 * time.Millisecond)
		rdb := slow.client(t, e.addr)
		logs := &logRecorder{}
		a, err := streamcancel.NewRegistry(rdb, streamcancel.WithNodeID("node-a"), streamcancel.WithKeyPrefix(e.prefix), streamcancel.WithPollInterval(20*time.Millisecond), streamcancel.WithTTL(300*time.Millisecond), streamcancel.WithLogger(slog.New(logs)))
		require.NoError(t, err)
		c := e.client(t)
		waitSubscribed(t, a)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		require.Len(t, e.keys(t, c), 1, "markers after Start")

		// The marker vanishes, as after FLUSHDB. The subscriber's connection
		// stays up, so the next lease refresh, 100ms later, finds it gone.
		slow.armed.Store(true)
		require.NoError(t, c.Del(ctx, e.runKey("chat-1")).Err())
		deleted := time.Now()
		select {
		case <-slow.writing:
			t.Logf("a background pass registered the run %v after its marker was deleted", time.Since(deleted))
		case <-time.After(2 * time.Second):
			t.Fatal("no background pass registered the run again within 2s")
		}

		require.NoError(t, chk.Close(), "Checker.Close while a pass registers the run")
		assert.NoError(t, a.Close(), "Registry.Close while a pass registers the run")
		time.Sleep(100 * time.Millisecond)
		assert.Empty(t, e.keys(t, c), "markers after Checker.Close and Registry.Close returned")
		for _, record := range logs.find("release failed") {
			t.Logf("logged release error: %s", record["error"])
		}
	})
}

// Registry.Close returns within about one second on a server that accepts
// connections but never replies. go-redis v9.0.0's PubSub.ReceiveTimeout
// holds the PubSub's mutex while it dials and waits for the HELLO reply,
// up to the client's ReadTimeout, and PubSub.Close needs that mutex.
func TestRegistryCloseSilentServer(t *testing.T) {
	addr := redistest.SilentServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 2 * time.Second})
	defer rdb.Close()
	a, err := streamcancel.NewRegistry(rdb, streamcancel.WithNodeID("node-a"))
	require.NoError(t, err)

	// The first SUBSCRIBE's dial gives up after ReadTimeout. The receive
	// that follows dials again under the PubSub's mutex.
	time.Sleep(2200 * time.Millisecond)

	begin := time.Now()
	closeErr := a.Close()
	elapsed := time.Since(begin)
	t.Logf("Registry.Close took %v and returned %v", elapsed, closeErr)
	assert.Less(t, elapsed, 1200*time.Millisecond, "Registry.Close on a server that never replies")

	// The subscriber's dial ends within ReadTimeout.
	time.Sleep(2 * time.Second)
}

// When Redis is down, Registry.Close reports that it could not delete the
// markers, and Checker.Close afterwards ends the run locally.
func TestRegistryCloseReportsFailedRelease(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		proxy := newProxy(t, e.addr)
		a := e.registryOn(t, clientAt(t, proxy.Addr()), "node-a")
		c := e.client(t)

		chk, err := a.Start(ctx, "chat-1")
		require.NoError(t, err)
		proxy.Refuse(true)
		proxy.Cut()

		closeErr := a.Close()
		assert.ErrorContains(t, closeErr, "removing the markers of 1 runs failed")
		assert.NoError(t, chk.Close(), "Checker.Close after Registry.Close")
		assert.True(t, chk.Cancelled())
		proxy.Refuse(false)

		require.Len(t, e.keys(t, c), 1, "markers after Registry.Close failed to reach Redis")
	})
}

// Starts whose contexts end at random points race Checker.Close and
// Registry.Close. Every path must leave no marker, and the race detector
// must find no misuse of the registry's wait group.
func TestStartCanceledRacingClose(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		c := e.client(t)
		const iterations, startsPerIteration = 20, 20

		leaked := 0
		for it := 0; it < iterations; it++ {
			r, err := streamcancel.NewRegistry(e.client(t), streamcancel.WithKeyPrefix(e.prefix), streamcancel.WithNodeID(fmt.Sprintf("node-%d", it)), streamcancel.WithPollInterval(10*time.Millisecond))
			require.NoError(t, err)

			var wg sync.WaitGroup
			for i := 0; i < startsPerIteration; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					startCtx, cancel := context.WithTimeout(ctx, time.Duration(i%7)*50*time.Microsecond)
					defer cancel()
					chk, err := r.Start(startCtx, fmt.Sprintf("it%d-run%d", it, i))
					if err == nil {
						_ = chk.Close()
					}
				}(i)
			}
			time.Sleep(time.Duration(it%4) * 100 * time.Microsecond)
			_ = r.Close()
			wg.Wait()

			// A drop goroutine may still be deleting its marker.
			time.Sleep(20 * time.Millisecond)
			leaked += countKeys(t, c, fmt.Sprintf("%s:{it%d-run*", e.prefix, it))
		}
		assert.Zero(t, leaked, "markers left of %d Starts", iterations*startsPerIteration)
	})
}
