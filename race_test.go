//go:build race

package streamcancel_test

// raceEnabled is true when the tests run with the race detector, whose
// instrumentation makes every atomic operation and lock far slower.
const raceEnabled = true
