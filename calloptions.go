package streamcancel

import (
	"fmt"
)

// A StartOption configures one call of Registry.Start.
type StartOption interface {
	applyStart(*startConfig)
}

// A CancelOption configures one call of Registry.Cancel,
// Registry.CancelAndWait or Registry.CancelGroup.
type CancelOption interface {
	applyCancel(*cancelConfig)
}

type startOptionFunc func(*startConfig)

func (f startOptionFunc) applyStart(c *startConfig) { f(c) }

type cancelOptionFunc func(*cancelConfig)

func (f cancelOptionFunc) applyCancel(c *cancelConfig) { f(c) }

// startConfig is the validated configuration of one Start.
type startConfig struct {
	group    string
	groupSet bool
	takeover bool
}

// cancelConfig is the validated configuration of one cancel call.
type cancelConfig struct {
	reason    string
	reasonSet bool
}

// WithGroup makes the run a member of group, such as a conversation or a
// user, so that Registry.CancelGroup on any node cancels it. A run joins
// one group at most; the last WithGroup wins. The name is 1 to
// MaxGroupLen bytes of any kind; Start returns ErrInvalidGroup otherwise.
func WithGroup(group string) StartOption {
	return startOptionFunc(func(c *startConfig) {
		c.group = group
		c.groupSet = true
	})
}

// WithTakeover makes Start replace an active run of the stream instead of
// returning ErrAlreadyActive. In one atomic step Redis hands the stream to
// the new run and records that the old run was taken over, so there is
// never a moment with two registered runs or with none. The old run's
// context ends on its node with a cause that matches ErrTakenOver and
// ErrCanceled, pushed at once and found by the next poll if the push is
// lost.
func WithTakeover() StartOption {
	return startOptionFunc(func(c *startConfig) { c.takeover = true })
}

// WithReason attaches a short reason to a cancel, such as "user pressed
// Stop". The canceled run reads it from the Reason field of the
// *CancelError cause of its context. When a run is canceled more than
// once, the first reason stays. The reason is 1 to MaxReasonLen bytes
// of UTF-8 text without control characters; the call returns
// ErrInvalidReason otherwise.
func WithReason(reason string) CancelOption {
	return cancelOptionFunc(func(c *cancelConfig) {
		c.reason = reason
		c.reasonSet = true
	})
}

// newStartConfig applies and validates the options of one Start.
func newStartConfig(opts []StartOption) (startConfig, error) {
	var cfg startConfig
	for i, opt := range opts {
		if opt == nil {
			return startConfig{}, fmt.Errorf("%w: Start option %d is a nil StartOption; pass options made by WithGroup or WithTakeover", ErrInvalidOption, i+1)
		}
		opt.applyStart(&cfg)
	}

	if cfg.groupSet {
		if err := validateGroup(cfg.group); err != nil {
			return startConfig{}, err
		}
	}
	return cfg, nil
}

// newCancelConfig applies and validates the options of one cancel call.
func newCancelConfig(opts []CancelOption) (cancelConfig, error) {
	var cfg cancelConfig
	for i, opt := range opts {
		if opt == nil {
			return cancelConfig{}, fmt.Errorf("%w: cancel option %d is a nil CancelOption; pass options made by WithReason", ErrInvalidOption, i+1)
		}
		opt.applyCancel(&cfg)
	}

	if cfg.reasonSet {
		if err := validateReason(cfg.reason); err != nil {
			return cancelConfig{}, err
		}
	}
	return cfg, nil
}
