package streamcancel_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A closed run must not stay reachable from the context given to Start,
// because a server may start every run under one long-lived context.
func TestCheckerCollectedAfterClose(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		a := e.registry(t, "node-a")
		parent, cancel := context.WithCancel(context.Background())
		defer cancel()

		const runs = 50
		var collected atomic.Int64
		for i := 0; i < runs; i++ {
			chk, err := a.Start(parent, fmt.Sprintf("chat-%d", i))
			require.NoError(t, err)
			// The finalizer goes on the run's context, which only the run
			// refers to: a finalizer on the Checker would not run,
			// because the Checker is part of a reference cycle.
			runtime.SetFinalizer(chk.Context(), func(interface{}) { collected.Add(1) })
			require.NoError(t, chk.Close())
		}

		require.Eventually(t, func() bool {
			runtime.GC()
			return collected.Load() == runs
		}, 5*time.Second, 10*time.Millisecond, "closed runs collected while their parent context lives")
	})
}
