package streamcancel_test

import (
	"testing"

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
