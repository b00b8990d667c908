package redistest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine outlives the tests, such as
// the goroutine that waits for a redis-server process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
