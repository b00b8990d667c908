package streamcancel

import (
	"context"
	"errors"
)

// Sentinel errors. Errors for invalid input, conflicts and a closed
// registry wrap one of them with details; errors from Redis and from
// contexts wrap the underlying error. Compare with [errors.Is].
var (
	// ErrInvalidStreamID is returned by Start and Cancel for an empty
	// stream ID or one longer than MaxStreamIDLen bytes.
	ErrInvalidStreamID = errors.New("streamcancel: invalid stream ID")

	// ErrAlreadyActive is returned by Start when a run of the same stream
	// ID is active on any node.
	ErrAlreadyActive = errors.New("streamcancel: stream already has an active run")

	// ErrClosed is returned by Start and Cancel after Registry.Close.
	ErrClosed = errors.New("streamcancel: registry closed")

	// ErrCanceled is the cause of a run's context after a Cancel from any
	// node. The cause also matches context.Canceled.
	ErrCanceled = errors.New("streamcancel: stream canceled")

	// ErrInvalidOption is returned by NewRegistry for a nil client, a nil
	// Option or an option value out of range.
	ErrInvalidOption = errors.New("streamcancel: invalid option")
)

// canceledError is the cancellation cause of a run stopped through Cancel.
// It matches both ErrCanceled and context.Canceled, so code that only
// checks for context errors treats it as an ordinary cancellation.
type canceledError struct{}

func (canceledError) Error() string { return ErrCanceled.Error() }

func (canceledError) Is(target error) bool {
	return target == ErrCanceled || target == context.Canceled
}
