package streamcancel

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors. Errors for invalid input, conflicts and a closed
// registry wrap one of them with details; errors from Redis and from
// contexts wrap the underlying error. Compare with [errors.Is].
var (
	// ErrInvalidStreamID is returned by Start, Cancel and CancelAndWait
	// for an empty stream ID or one longer than MaxStreamIDLen bytes.
	ErrInvalidStreamID = errors.New("streamcancel: invalid stream ID")

	// ErrAlreadyActive is returned by Start when a run of the same stream
	// ID is active on any node.
	ErrAlreadyActive = errors.New("streamcancel: stream already has an active run")

	// ErrClosed is returned by Start, Cancel, CancelAndWait and
	// CancelGroup after Registry.Close, and by a CancelAndWait that is
	// waiting when the registry closes.
	ErrClosed = errors.New("streamcancel: registry closed")

	// ErrCanceled is the cause of a run's context after a Cancel from any
	// node or a takeover. The cause also matches context.Canceled and is a
	// *CancelError that carries the reason.
	ErrCanceled = errors.New("streamcancel: stream canceled")

	// ErrTakenOver is matched, together with ErrCanceled, by the cause of
	// a run that a Start with WithTakeover replaced.
	ErrTakenOver = errors.New("streamcancel: stream taken over by a new run")

	// ErrInvalidGroup is returned for an empty group name or one longer
	// than MaxGroupLen bytes.
	ErrInvalidGroup = errors.New("streamcancel: invalid group")

	// ErrInvalidReason is returned for a cancel reason that is empty,
	// longer than MaxReasonLen bytes, not UTF-8 or contains control
	// characters.
	ErrInvalidReason = errors.New("streamcancel: invalid cancel reason")

	// ErrInvalidOption is returned by NewRegistry for a nil client, a nil
	// Option or an option value out of range, and by the calls that take
	// a StartOption or CancelOption for a nil one.
	ErrInvalidOption = errors.New("streamcancel: invalid option")
)

// A CancelError is the cause of a run's context after a cancel from any
// node or a takeover. It matches both ErrCanceled and context.Canceled, so
// code that only checks for context errors treats it as an ordinary
// cancellation; a takeover also matches ErrTakenOver. Read it with
// errors.As:
//
//	var ce *streamcancel.CancelError
//	if errors.As(context.Cause(chk.Context()), &ce) {
//		log.Printf("stopped: %q", ce.Reason)
//	}
type CancelError struct {
	// Reason is the reason given with WithReason, or empty.
	Reason string

	// TakenOverBy is the node of the run that replaced this run through
	// WithTakeover, or empty when the run was canceled.
	TakenOverBy string
}

func (e *CancelError) Error() string {
	switch {
	case e.TakenOverBy != "":
		return fmt.Sprintf("%v: taken over by a run on node %q", ErrCanceled, e.TakenOverBy)
	case e.Reason != "":
		return fmt.Sprintf("%v: %s", ErrCanceled, e.Reason)
	}
	return ErrCanceled.Error()
}

// Is reports whether target is ErrCanceled, context.Canceled or, after a
// takeover, ErrTakenOver.
func (e *CancelError) Is(target error) bool {
	return target == ErrCanceled || target == context.Canceled || (target == ErrTakenOver && e.TakenOverBy != "")
}
