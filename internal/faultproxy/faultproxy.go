// Package faultproxy is a TCP proxy for tests that puts faults between a
// Redis client and its server: added latency, cut connections, refused
// connections and connections that stop delivering replies.
//
// It listens on a loopback port and forwards to one target address. All
// methods are safe for concurrent use.
package faultproxy

import (
	"net"
	"sync"
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
}

// link is one proxied connection.
type link struct {
	client net.Conn
	server net.Conn

	mu     sync.Mutex
	frozen bool
	thawed chan struct{}

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
	p := &Proxy{target: target, ln: ln, conns: make(map[*link]struct{})}

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
	p.eachLink(func(l *link) {
		l.mu.Lock()
		if !l.frozen {
			l.frozen = true
			l.thawed = make(chan struct{})
		}
		l.mu.Unlock()
	})
}

// Thaw ends Freeze on every connection.
func (p *Proxy) Thaw() {
	p.eachLink(func(l *link) {
		l.mu.Lock()
		if l.frozen {
			l.frozen = false
			close(l.thawed)
		}
		l.mu.Unlock()
	})
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
		p.mu.Unlock()
		if refuse {
			resetConn(client)
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

// forward copies src to dst until either side fails. Replies, the target
// to client direction, honour the delay and Freeze.
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
		if n > 0 && reply {
			if !l.waitThawed() {
				return
			}
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

// waitThawed blocks while the link is frozen. It returns false when the
// link was closed meanwhile.
func (l *link) waitThawed() bool {
	for {
		l.mu.Lock()
		frozen, thawed := l.frozen, l.thawed
		l.mu.Unlock()
		if !frozen {
			return true
		}
		select {
		case <-thawed:
		case <-l.done:
			return false
		}
	}
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
