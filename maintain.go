package streamcancel

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// pollGapDivisor limits polls requested through Cancelled to one per run
// per PollInterval/pollGapDivisor.
const pollGapDivisor = 4

// maintain is the registry's background loop. Every PollInterval it reads
// the cancel records of all local runs, or publishes a probe where its
// arrival proves as much (see probe). Every TTL/3 it
// extends the runs' leases, after each re-subscribe it reads the records
// at once, and it serves the per-run polls that Cancelled requests. Each
// pass is one pipelined round trip; a run whose marker is missing is
// registered again in a second one.
func (r *Registry) maintain() {
	defer r.wg.Done()

	poll := time.NewTicker(r.cfg.pollInterval)
	defer poll.Stop()
	refresh := time.NewTicker(r.cfg.refreshInterval())
	defer refresh.Stop()

	for {
		select {
		case <-r.ctx.Done():
			return
		case <-poll.C:
			r.pollTick()
		case <-refresh.C:
			runs := r.snapshot()
			if !r.syncRuns(runs, modeExtend) {
				// A lease that was not extended may lapse, and no push
				// tells of that, so the next PollInterval reads the runs.
				markCovered(runs, 0)
			}
		case <-r.resync:
			r.loadScripts()
			r.readAll(r.snapshot())
		case c := <-r.pollQueue:
			r.syncRuns(r.takePolls(c), modeRead)
		}
	}
}

// loadScripts loads the library's scripts into Redis, so that the first
// Start, Cancel and Close after a connect or a Redis restart need no
// second round trip for a missing script. A failure is left to the
// fallback in each call.
func (r *Registry) loadScripts() {
	ctx, cancel := context.WithTimeout(r.ctx, max(r.cfg.pollInterval, time.Second))
	defer cancel()

	for _, script := range allScripts {
		if err := script.Load(ctx, r.rdb).Err(); err != nil {
			return
		}
	}
}

// requestPoll queues a poll of c's record when the push path is down and
// no poll of c is queued or in flight. It never blocks or allocates.
func (r *Registry) requestPoll(c *Checker) {
	if r.pushReady.Load() || !c.polling.CompareAndSwap(false, true) {
		return
	}
	select {
	case r.pollQueue <- c:
	default:
		c.polling.Store(false)
	}
}

// takePolls drains the poll queue, starting with first, and returns the
// runs whose last poll is old enough.
func (r *Registry) takePolls(first *Checker) []*Checker {
	now := time.Now()
	gap := r.cfg.pollInterval / pollGapDivisor
	var runs []*Checker

	take := func(c *Checker) {
		if !c.closed.Load() && c.takePoll(now, gap) {
			runs = append(runs, c)
		}
		c.polling.Store(false)
	}

	take(first)
	for {
		select {
		case c := <-r.pollQueue:
			take(c)
		default:
			return runs
		}
	}
}

// syncRuns runs sync.lua for runs in one pipeline and applies the replies:
// it cancels runs whose cancel is recorded, and registers again runs whose
// marker is missing. Runs not known to be registered use modeRegister
// whatever mode is. It reports whether every call succeeded, those of the
// registration pass included.
func (r *Registry) syncRuns(runs []*Checker, mode string) bool {
	if len(runs) == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(r.ctx, max(r.cfg.pollInterval, time.Second))
	defer cancel()

	calls := make([]scriptCall, len(runs))
	modes := make([]string, len(runs))
	for i, c := range runs {
		modes[i] = mode
		if !c.registered.Load() {
			modes[i] = c.registerMode()
		}
		calls[i] = scriptCall{keys: c.syncKeys(), args: c.syncArgs(modes[i])}
	}
	cmds := r.pipelineScript(ctx, syncScript, calls)

	var err error
	errStream := runs[0].streamID
	var lost, stale, join []*Checker
	for i, c := range runs {
		reply, cerr := parseSyncReply(cmds[i].Val())
		if cmds[i].Err() != nil {
			cerr = cmds[i].Err()
		}
		if cerr != nil {
			if err == nil {
				err, errStream = cerr, c.streamID
			}
			continue
		}
		reply = reply.sentOnce(modes[i])
		switch r.applySync(c, reply) {
		case syncLost:
			lost = append(lost, c)
		case syncStale:
			stale = append(stale, c)
		case syncDone:
			// A refresh extends group memberships with the leases, and a
			// run that this pass registers joins its group. That includes
			// a run whose marker a Start that failed open wrote late:
			// sentOnce turns the marker this pass finds held into a
			// registration, and Start's own join may have been cut short.
			if c.group != "" && (mode == modeExtend || reply.state == stateRegistered) {
				join = append(join, c)
			}
		}
	}

	// One failed pass is one error, however many runs it covered.
	if err != nil && r.ctx.Err() == nil {
		r.reportError(kindSync, errStream, err)
	}
	if len(join) > 0 {
		r.joinGroups(ctx, join)
	}
	ok := err == nil
	if len(lost) > 0 && mode != modeRegister {
		ok = r.syncRuns(lost, modeRegister) && ok
	}
	if len(stale) > 0 {
		// Close may have ended the pass's context, and these markers
		// must go all the same.
		releaseCtx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		_ = r.releaseAll(releaseCtx, stale, releaseEnd)
	}
	return ok
}

// Outcomes of applySync that need another round trip.
const (
	syncDone  = iota
	syncLost  // the marker is missing and must be registered again
	syncStale // the marker was created for a run that closed meanwhile
)

// applySync updates c from a sync.lua reply.
func (r *Registry) applySync(c *Checker, reply syncReply) int {
	switch reply.state {
	case stateMissing:
		c.registered.Store(false)
		if c.closed.Load() {
			// Close deleted the marker after this pass listed the run.
			return syncDone
		}
		return syncLost
	case stateTakenOver:
		c.registered.Store(false)
		c.cancelRemote(&CancelError{TakenOverBy: reply.node})
		return syncDone
	case stateOther:
		c.registered.Store(false)
		r.reportError(kindConflict, c.streamID, fmt.Errorf("the run's marker expired and a run on node %q now holds the stream; this run keeps going but cannot be canceled until that run ends", reply.node))
		return syncDone
	case stateRegistered:
		c.registered.Store(true)
		c.takeover.Store(false)
		if c.closed.Load() {
			return syncStale
		}
	case stateHeld:
		c.registered.Store(true)
	}

	if reply.canceled {
		c.cancelRemote(&CancelError{Reason: reply.reason})
	}
	return syncDone
}

// runSync runs sync.lua for one run, outside a pipeline.
func (r *Registry) runSync(ctx context.Context, c *Checker, mode string) (syncReply, error) {
	v, err := syncScript.Run(ctx, r.rdb, c.syncKeys(), c.syncArgs(mode)...).Result()
	if err != nil {
		return syncReply{}, err
	}
	reply, err := parseSyncReply(v)
	return reply.sentOnce(mode), err
}

func (c *Checker) syncArgs(mode string) []interface{} {
	return []interface{}{c.token, c.reg.cfg.nodeID, c.reg.cfg.ttl.Milliseconds(), mode, nodeChannelPrefix(c.reg.cfg.keyPrefix)}
}

// registerMode is the sync.lua mode that registers c: modeTakeover when c
// replaces an active run of its stream, else modeRegister.
func (c *Checker) registerMode() string {
	if c.takeover.Load() {
		return modeTakeover
	}
	return modeRegister
}

// scriptCall is one call of a script: the keys of one stream and the
// arguments.
type scriptCall struct {
	keys []string
	args []interface{}
}

// pipelineScript sends calls of script in one pipeline as EVALSHA and
// returns their commands, in the order of calls, with the replies and
// errors in them. Calls that get NOSCRIPT, as after a restart or on a
// cluster node that never loaded the script, are sent once more as EVAL in
// a second pipeline, which also caches the script on that server.
//
// On a cluster each call goes to the primary of its keys' slot, so the
// keys of one call must share a slot, which the keys of one stream do.
func (r *Registry) pipelineScript(ctx context.Context, script *redis.Script, calls []scriptCall) []*redis.Cmd {
	cmds := r.sendScripts(ctx, calls, func(pipe redis.Pipeliner, c scriptCall) *redis.Cmd {
		return script.EvalSha(ctx, pipe, c.keys, c.args...)
	})

	var missing []int
	for i, cmd := range cmds {
		if isNoScript(cmd.Err()) {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return cmds
	}

	retry := make([]scriptCall, len(missing))
	for j, i := range missing {
		retry[j] = calls[i]
	}
	evals := r.sendScripts(ctx, retry, func(pipe redis.Pipeliner, c scriptCall) *redis.Cmd {
		return script.Eval(ctx, pipe, c.keys, c.args...)
	})
	for j, i := range missing {
		cmds[i] = evals[j]
	}
	return cmds
}

// sendScripts sends one command per call, built by add, in one pipeline.
func (r *Registry) sendScripts(ctx context.Context, calls []scriptCall, add func(redis.Pipeliner, scriptCall) *redis.Cmd) []*redis.Cmd {
	pipe := r.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = add(pipe, c)
	}
	_, err := pipe.Exec(ctx)

	// go-redis leaves the commands without an error when it could not
	// get a connection at all.
	if err != nil {
		for _, cmd := range cmds {
			if cmd.Err() != nil {
				return cmds
			}
		}
		for _, cmd := range cmds {
			cmd.SetErr(err)
		}
	}
	return cmds
}
