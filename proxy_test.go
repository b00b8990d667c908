package streamcancel_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel/internal/faultproxy"
)

// newProxy returns a fault proxy to addr, closed when the test ends.
func newProxy(t *testing.T, addr string) *faultproxy.Proxy {
	p, err := faultproxy.New(addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// cutReplyInFlight delays every reply through p by a second and cuts p's
// connections as soon as done reports true, while the reply to the call
// that made it true is still on its way. go-redis then sends that call
// again on a new connection, as after a network fault. The client must
// hold an idle connection, so that the call needs no dial. After 5s
// without done, it cuts all the same.
func cutReplyInFlight(p *faultproxy.Proxy, done func() bool) {
	p.SetDelay(time.Second)
	go func() {
		defer p.SetDelay(0)
		for end := time.Now().Add(5 * time.Second); !done() && time.Now().Before(end); {
			time.Sleep(time.Millisecond)
		}
		p.Cut()
	}()
}
