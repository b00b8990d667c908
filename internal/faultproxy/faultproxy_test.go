package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// quiet is how long a test waits to conclude that no bytes arrive.
const quiet = 200 * time.Millisecond

// echoServer is a loopback TCP server that echoes every line back and
// counts the connections and lines it got.
type echoServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	conns atomic.Int64
	lines atomic.Int64
}

func startEcho(t *testing.T) *echoServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &echoServer{ln: ln}

	var mu sync.Mutex
	var open []net.Conn
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadBytes('\n')
					if err != nil {
						return
					}
					s.lines.Add(1)
					if _, err := c.Write(line); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func newProxy(t *testing.T, target string) *Proxy {
	p, err := New(target)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// proxiedEcho starts an echo server and a proxy to it, and returns both
// with a connection through the proxy that has made one round trip.
func proxiedEcho(t *testing.T) (*echoServer, *Proxy, net.Conn) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	c := dial(t, p.Addr())
	_, err := roundTrip(c, "ping\n", time.Second)
	require.NoError(t, err, "round trip through a healthy proxy")
	return echo, p, c
}

func dial(t *testing.T, addr string) net.Conn {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip sends line and returns the echo, or an error when none
// arrives within limit.
func roundTrip(c net.Conn, line string, limit time.Duration) (string, error) {
	if _, err := c.Write([]byte(line)); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(limit))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, len(line))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

// readHeld reads want from c, a reply that a fault held back, within a
// second.
func readHeld(t *testing.T, c net.Conn, want string) {
	t.Helper()
	buf := make([]byte, len(want))
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := io.ReadFull(c, buf)
	require.NoError(t, err, "held reply")
	assert.Equal(t, want, string(buf))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestProxyForwards(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	c := dial(t, p.Addr())

	got, err := roundTrip(c, "ping\n", time.Second)
	require.NoError(t, err)
	assert.Equal(t, "ping\n", got)
	assert.Equal(t, 1, p.Accepted())
}

func TestDelayHoldsReplies(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	c := dial(t, p.Addr())
	p.SetDelay(300 * time.Millisecond)

	begin := time.Now()
	_, err := roundTrip(c, "ping\n", 2*time.Second)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(begin), 300*time.Millisecond, "round trip with a 300ms delay")
}

func TestCutResetsConnections(t *testing.T) {
	_, p, c := proxiedEcho(t)

	p.Cut()
	_, err := roundTrip(c, "ping\n", time.Second)
	require.Error(t, err, "round trip after Cut")
	assert.False(t, isTimeout(err), "error after Cut is a reset, not a timeout: %v", err)
}

func TestRefuseClosesNewConnections(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	p.Refuse(true)

	// The reset may already fail the dial.
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		_, err = roundTrip(c, "ping\n", time.Second)
		_ = c.Close()
		require.Error(t, err, "round trip while refusing")
		assert.False(t, isTimeout(err), "error while refusing is a reset, not a timeout: %v", err)
	}
	assert.Zero(t, echo.conns.Load(), "connections that reached the target")

	p.Refuse(false)
	c := dial(t, p.Addr())
	_, err := roundTrip(c, "ping\n", time.Second)
	assert.NoError(t, err, "round trip after Refuse(false)")
}

func TestBlackholeAcceptsAndNeverAnswers(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	p.Blackhole(true)

	held := dial(t, p.Addr())
	_, err := roundTrip(held, "ping\n", quiet)
	require.Error(t, err)
	assert.True(t, isTimeout(err), "error from a blackholed connection is a timeout: %v", err)
	assert.Zero(t, echo.conns.Load(), "connections that reached the target")

	p.Blackhole(false)
	_, err = roundTrip(held, "ping\n", time.Second)
	assert.Error(t, err, "a held connection is reset when the blackhole ends")
	c := dial(t, p.Addr())
	_, err = roundTrip(c, "ping\n", time.Second)
	assert.NoError(t, err, "round trip after the blackhole ends")
}

// Freeze holds the replies of current connections and Stall holds both
// directions. Neither touches new connections, and Thaw delivers what
// was held.
func TestFreezeAndStallHoldCurrentConnections(t *testing.T) {
	for _, tc := range []struct {
		name string
		hold func(*Proxy)
		// reached is how many lines the target got, the held one
		// included when only replies are held.
		reached int64
	}{
		{name: "Freeze", hold: (*Proxy).Freeze, reached: 2},
		{name: "Stall", hold: (*Proxy).Stall, reached: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			echo, p, c := proxiedEcho(t)

			tc.hold(p)
			_, err := roundTrip(c, "held\n", quiet)
			assert.True(t, isTimeout(err), "reply while held: %v", err)
			assert.Equal(t, tc.reached, echo.lines.Load(), "lines that reached the target")

			fresh := dial(t, p.Addr())
			_, err = roundTrip(fresh, "fresh\n", time.Second)
			assert.NoError(t, err, "a connection opened after %s", tc.name)

			p.Thaw()
			readHeld(t, c, "held\n")
		})
	}
}

func TestFreezeSubscribersLeavesOthersHealthy(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.ln.Addr().String())
	sub := dial(t, p.Addr())
	other := dial(t, p.Addr())

	// A RESP SUBSCRIBE as go-redis writes it, followed by a newline so
	// that the echo server replies to it.
	subscribe := "*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n\n"
	_, err := roundTrip(sub, subscribe, time.Second)
	require.NoError(t, err)
	publish := "*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$9\r\nsubscribe\r\n\n"
	_, err = roundTrip(other, publish, time.Second)
	require.NoError(t, err)

	assert.Equal(t, 1, p.FreezeSubscribers(), "connections frozen")
	_, err = roundTrip(sub, "ping\n", quiet)
	assert.True(t, isTimeout(err), "reply on the subscriber while frozen: %v", err)
	_, err = roundTrip(other, "ping\n", time.Second)
	assert.NoError(t, err, "round trip on the other connection")

	p.Thaw()
	readHeld(t, sub, "ping\n")
}

func TestIsSubscribe(t *testing.T) {
	for _, tc := range []struct {
		sent string
		want bool
	}{
		{"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n", true},
		{"*2\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n", true},
		{"*2\r\n$10\r\nSSUBSCRIBE\r\n$2\r\nch\r\n", true},
		{"*2\r\n$10\r\nPSUBSCRIBE\r\n$3\r\nch*\r\n", true},
		{"*2\r\n$11\r\nUNSUBSCRIBE\r\n$2\r\nch\r\n", false},
		{"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$9\r\nsubscribe\r\n", false},
		{"*1\r\n$4\r\nPING\r\n", false},
	} {
		assert.Equal(t, tc.want, isSubscribe([]byte(tc.sent)), "isSubscribe(%q)", tc.sent)
	}
}

func TestCloseEndsHeldConnections(t *testing.T) {
	echo := startEcho(t)
	p, err := New(echo.ln.Addr().String())
	require.NoError(t, err)
	c := dial(t, p.Addr())
	_, err = roundTrip(c, "ping\n", time.Second)
	require.NoError(t, err)
	p.Stall()
	p.Blackhole(true)
	held := dial(t, p.Addr())
	_, _ = held.Write([]byte("x\n"))

	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not return with stalled and blackholed connections")
	}
}
