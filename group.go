package streamcancel

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// CancelGroup cancels every active run that joined group through
// WithGroup, on every node, and returns how many runs it canceled. Each
// cancel is recorded and pushed like a Cancel of that run alone, with the
// reason of WithReason.
//
// CancelGroup reads the group's members and then cancels each run by its
// token, so a run that was replaced or ended meanwhile is neither canceled
// nor counted. Every run whose Start returned before CancelGroup was
// called is canceled and counted, unless Redis failed while it started. A
// run that starts while CancelGroup runs is canceled and counted when it
// joined the group before CancelGroup read the members, and otherwise
// neither canceled nor counted.
//
// When Redis fails or ctx ends first, CancelGroup returns an error together
// with the number of runs whose cancel is known to be recorded. The cancels
// of other members may or may not be recorded then. When ctx has no
// deadline, CancelGroup gives up after 5s. It returns ErrInvalidGroup for an
// invalid group, ErrInvalidReason for an invalid reason and ErrClosed after
// Close. It is safe for concurrent use.
func (r *Registry) CancelGroup(ctx context.Context, group string, opts ...CancelOption) (int, error) {
	if err := validateGroup(group); err != nil {
		return 0, err
	}
	cfg, err := newCancelConfig(opts)
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("streamcancel: cancel group %q: nothing was sent, because the context had ended: %w", group, err)
	}

	timeout := cancelTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
	}

	var canceled atomic.Int64
	_, err = bounded(r, ctx, timeout, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, r.cancelMembers(ctx, group, cfg, timeout, &canceled)
	})
	n := int(canceled.Load())
	if errors.Is(err, ErrClosed) {
		return n, fmt.Errorf("%w: cancel group %q: use a registry that is not closed", err, group)
	}
	if err != nil {
		r.stats.cancelErrors.Add(1)
		return n, fmt.Errorf("streamcancel: cancel group %q: %d runs canceled, the others may or may not be; retry it: %w", group, n, err)
	}
	return n, nil
}

// cancelMembers lists the members of group and cancels each in one
// pipeline of per-stream scripts, adding the number canceled to n. The
// call takes at most timeout.
func (r *Registry) cancelMembers(ctx context.Context, group string, cfg cancelConfig, timeout time.Duration, n *atomic.Int64) error {
	members, err := groupScript.Run(ctx, r.rdb, []string{groupKey(r.cfg.keyPrefix, group)}, groupList).StringSlice()
	if err != nil {
		return err
	}

	type run struct{ token, streamID string }
	runs := make([]run, 0, len(members))
	for _, m := range members {
		if token, streamID, ok := parseGroupMember(m); ok {
			runs = append(runs, run{token, streamID})
		}
	}
	if len(runs) == 0 {
		return nil
	}

	call := newCancelCall(r.cfg.keyPrefix, timeout)
	calls := make([]scriptCall, len(runs))
	for i, run := range runs {
		calls[i] = scriptCall{keys: cancelKeys(r.cfg.keyPrefix, run.streamID), args: call.args(cfg.reason, run.token, "", 0, 0)}
	}
	cmds := r.pipelineStable(ctx, cancelScript, calls)

	for _, cmd := range cmds {
		reply, cerr := parseCancelReply(cmd.Val())
		if cmd.Err() != nil {
			cerr = cmd.Err()
		}
		if cerr != nil {
			if err == nil {
				err = cerr
			}
			continue
		}
		if reply.found {
			n.Add(1)
			r.deliver(reply.token, &CancelError{Reason: cfg.reason})
		}
	}
	return err
}

// joinGroup adds c to its group, or extends its membership, with the
// registry's lease.
func (r *Registry) joinGroup(ctx context.Context, c *Checker) error {
	return groupScript.Run(ctx, r.rdb, []string{groupKey(r.cfg.keyPrefix, c.group)}, c.groupArgs(groupJoin)...).Err()
}

// joinGroups runs joinGroup for runs in one pipeline and reports the
// first error.
func (r *Registry) joinGroups(ctx context.Context, runs []*Checker) {
	calls := make([]scriptCall, len(runs))
	for i, c := range runs {
		calls[i] = scriptCall{keys: []string{groupKey(r.cfg.keyPrefix, c.group)}, args: c.groupArgs(groupJoin)}
	}
	var err error
	for _, cmd := range r.pipelineScript(ctx, groupScript, calls) {
		if err = cmd.Err(); err != nil {
			break
		}
	}
	if err != nil && r.ctx.Err() == nil {
		r.reportError(kindSync, runs[0].streamID, fmt.Errorf("extending group memberships: %w", err))
	}
}

// leaveGroup removes c from its group.
func (r *Registry) leaveGroup(ctx context.Context, c *Checker) error {
	return groupScript.Run(ctx, r.rdb, []string{groupKey(r.cfg.keyPrefix, c.group)}, c.groupArgs(groupLeave)...).Err()
}

func (c *Checker) groupArgs(mode string) []interface{} {
	return []interface{}{mode, groupMember(c.token, c.streamID), c.reg.cfg.ttl.Milliseconds()}
}
