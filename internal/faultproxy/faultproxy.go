// Package faultproxy is a TCP proxy for tests that puts faults between a
// Redis client and its server: added latency, cut connections, refused
// connections, a blackhole that accepts connections and never answers,
// and connections that stop delivering replies (half-open) or stop
// forwarding in both directions. Half-open can hit every connection or
// only those of Pub/Sub subscribers.
//
// It listens on a loopback port and forwards to one target address. All
// methods are safe for concurrent use.
package faultproxy

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// A Proxy forwards TCP connections from its own loopback address to a
// target, with faults switched on and off by its methods.
type Proxy struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	conns   map[*link]struct{}
	delay   time.Duration
	refuse  bool
	closed  bool
	wg      sync.WaitGroup
	accepts int

	// blackhole makes new connections land in held, where they are
	// read and never answered.
	blackhole bool
	held      map[net.Conn]struct{}
}

// link is one proxied connection.
type link struct {
	client net.Conn
	server net.Conn

	// subscriber is set once the client sent SUBSCRIBE, SSUBSCRIBE or
	// PSUBSCRIBE on the connection.
	subscriber atomic.Bool

	// frozen holds the replies, stalled holds both directions. thawed is
	// closed when both end.
	mu      sync.Mutex
	frozen  bool
	stalled bool
	thawed  chan struct{}

	resetOnce sync.Once
	done      chan struct{}
}

// New starts a proxy on a free port of 127.0.0.1 that forwards to target.
// Call Close to stop it and cut every connection.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, conns: make(map[*link]struct{}), held: make(map[net.Conn]struct{})}

	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's address, host:port.
func (p *Proxy) Addr() string {
	return p.ln.Addr().String()
}

// Accepted returns how many client connections the proxy has accepted and
// forwarded.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepts
}

// SetDelay delays every chunk of bytes sent from the target to clients by
// d, on current and new connections. Zero removes the delay.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// Refuse makes the proxy close new connections at once (on) or forward
// them again (off). Current connections are not touched; call Cut too to
// make the target look down.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refuse = on
}

// Cut closes every current connection with a TCP reset.
func (p *Proxy) Cut() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		links = append(links, l)
	}
	p.mu.Unlock()

	for _, l := range links {
		l.reset()
	}
}

// Freeze makes every current connection half-open: the proxy keeps
// reading what the client sends and passes it on, but stops delivering the
// target's replies to the client, as a stuck middlebox would. New
// connections are not affected. Thaw delivers again.
func (p *Proxy) Freeze() {
	p.eachLink(func(l *link) { l.hold(false) })
}

// FreezeSubscribers makes half-open, as Freeze does, only the current
// connections on which the client sent SUBSCRIBE, SSUBSCRIBE or
// PSUBSCRIBE, and leaves the others healthy. It returns how many
// connections it froze. Thaw delivers again.
func (p *Proxy) FreezeSubscribers() int {
	frozen := 0
	p.eachLink(func(l *link) {
		if l.subscriber.Load() {
			l.hold(false)
			frozen++
		}
	})
	return frozen
}

// Stall makes every current connection stop forwarding in both
// directions, as a peer that vanished without closing would: the client's
// requests no longer reach the target and no reply comes back. The
// connections stay open. New connections are not affected. Thaw forwards
// again, including what was held.
func (p *Proxy) Stall() {
	p.eachLink(func(l *link) { l.hold(true) })
}

// Thaw ends Freeze, FreezeSubscribers and Stall on every connection.
func (p *Proxy) Thaw() {
	p.eachLink(func(l *link) {
		l.mu.Lock()
		if l.frozen || l.stalled {
			l.frozen, l.stalled = false, false
			close(l.thawed)
		}
		l.mu.Unlock()
	})
}

// Blackhole makes the proxy accept new connections and then neither
// forward nor answer them (on): the client can connect and write, and
// never gets a byte back. Off forwards new connections again and resets
// the connections held so far. Current forwarded connections are not
// touched; call Stall too to make the target silent for them.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	p.blackhole = on
	var held []net.Conn
	if !on {
		for c := range p.held {
			held = append(held, c)
		}
	}
	p.mu.Unlock()

	for _, c := range held {
		resetConn(c)
	}
}

// Close stops the proxy, cuts every connection and waits for its
// goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()

	err := p.ln.Close()
	p.Thaw()
	p.Cut()
	p.Blackhole(false)
	p.wg.Wait()
	return err
}

func (p *Proxy) eachLink(fn func(*link)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.conns {
		fn(l)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}

		p.mu.Lock()
		refuse := p.refuse || p.closed
		blackhole := p.blackhole
		if blackhole && !refuse {
			p.held[client] = struct{}{}
			p.wg.Add(1)
		}
		p.mu.Unlock()
		if refuse {
			resetConn(client)
			continue
		}
		if blackhole {
			go p.swallow(client)
			continue
		}

		server, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			resetConn(client)
			continue
		}

		l := &link{client: client, server: server, done: make(chan struct{})}
		// Refuse or Close may have been called while the target was
		// dialed, and Cut does not see links that are not added yet.
		p.mu.Lock()
		if p.closed || p.refuse {
			p.mu.Unlock()
			l.reset()
			continue
		}
		p.conns[l] = struct{}{}
		p.accepts++
		p.wg.Add(2)
		p.mu.Unlock()

		go p.forward(l, l.server, l.client, false)
		go p.forward(l, l.client, l.server, true)
	}
}

// swallow reads and discards what a blackholed client sends until the
// connection is closed.
func (p *Proxy) swallow(client net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.held, client)
		p.mu.Unlock()
		resetConn(client)
	}()

	buf := make([]byte, 32<<10)
	for {
		if _, err := client.Read(buf); err != nil {
			return
		}
	}
}

// forward copies src to dst until either side fails. Replies, the target
// to client direction, honour the delay and Freeze; both directions honour
// Stall.
func (p *Proxy) forward(l *link, dst, src net.Conn, reply bool) {
	defer p.wg.Done()
	defer func() {
		l.reset()
		p.mu.Lock()
		delete(p.conns, l)
		p.mu.Unlock()
	}()

	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !reply && isSubscribe(buf[:n]) {
			l.subscriber.Store(true)
		}
		if n > 0 && !l.waitThawed(reply) {
			return
		}
		if n > 0 && reply {
			p.mu.Lock()
			delay := p.delay
			p.mu.Unlock()
			if delay > 0 {
				time.Sleep(delay)
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// hold stops forwarding the replies of l, or with both both directions.
func (l *link) hold(both bool) {
	l.mu.Lock()
	defer l.mu.Unlock()

	if !l.frozen && !l.stalled {
		l.thawed = make(chan struct{})
	}
	l.frozen = true
	l.stalled = l.stalled || both
}

// waitThawed blocks while l holds the direction given by reply. It
// returns false when the link was closed meanwhile.
func (l *link) waitThawed(reply bool) bool {
	for {
		l.mu.Lock()
		held := l.stalled || (reply && l.frozen)
		thawed := l.thawed
		l.mu.Unlock()
		if !held {
			return true
		}
		select {
		case <-thawed:
		case <-l.done:
			return false
		}
	}
}

// subscribeCommands are the RESP bulk strings that name the commands that
// turn a connection into a Pub/Sub subscriber, in lower case.
var subscribeCommands = [][]byte{
	[]byte("$9\r\nsubscribe\r\n"),
	[]byte("$10\r\nssubscribe\r\n"),
	[]byte("$10\r\npsubscribe\r\n"),
}

// isSubscribe reports whether b, bytes a client sent, contains a
// subscribe command: a RESP array whose first element names it.
//
// NOTE: a command split across two reads is missed. Redis clients write
// each command in one write.
func isSubscribe(b []byte) bool {
	lower := bytes.ToLower(b)
	for _, cmd := range subscribeCommands {
		for from := 0; ; {
			i := bytes.Index(lower[from:], cmd)
			if i < 0 {
				break
			}
			if startsArray(lower[:from+i]) {
				return true
			}
			from += i + 1
		}
	}
	return false
}

// startsArray reports whether b ends with a RESP array header, "*" and a
// count followed by CRLF.
func startsArray(b []byte) bool {
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		return false
	}
	i := len(b) - 2
	digits := 0
	for i > 0 && b[i-1] >= '0' && b[i-1] <= '9' {
		i--
		digits++
	}
	return digits > 0 && i > 0 && b[i-1] == '*'
}

func (l *link) reset() {
	l.resetOnce.Do(func() {
		close(l.done)
		resetConn(l.client)
		resetConn(l.server)
	})
}

// resetConn closes c so that the peer gets a TCP reset rather than an
// orderly close.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
