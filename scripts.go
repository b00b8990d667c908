package streamcancel

import (
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	// pushSource defines the Lua function push, which every script that
	// notifies a node uses; it is prepended to those scripts.
	//go:embed push.lua
	pushSource string

	//go:embed sync.lua
	syncSource string

	//go:embed cancel.lua
	cancelSource string

	//go:embed release.lua
	releaseSource string

	//go:embed group.lua
	groupSource string

	syncScript    = redis.NewScript(pushSource + syncSource)
	cancelScript  = redis.NewScript(pushSource + cancelSource)
	releaseScript = redis.NewScript(pushSource + releaseSource)
	groupScript   = redis.NewScript(groupSource)

	allScripts = []*redis.Script{syncScript, cancelScript, releaseScript, groupScript}
)

// Modes of sync.lua.
const (
	modeRegister = "register"
	modeTakeover = "takeover"
	modeExtend   = "extend"
	modeRead     = "read"
)

// Marker states returned by sync.lua.
const (
	stateTakenOver  = -2 // a run started with WithTakeover replaced this run
	stateOther      = -1 // another run holds the stream
	stateMissing    = 0  // no marker
	stateHeld       = 1  // the marker is this run's
	stateRegistered = 2  // this call created the marker
)

// Modes of release.lua.
const (
	releaseEnd    = "end"    // the run has ended
	releaseDetach = "detach" // only the marker goes; the loop may still run
)

// Modes of group.lua.
const (
	groupJoin  = "join"
	groupLeave = "leave"
	groupList  = "list"
)

// syncReply is the parsed reply of sync.lua.
type syncReply struct {
	state    int64
	canceled bool
	node     string
	reason   string
}

// sentOnce returns the reply of a call in mode as if go-redis had sent it
// once. go-redis resends a call whose connection broke before the reply,
// and a registration sent twice finds the marker its first send created.
func (s syncReply) sentOnce(mode string) syncReply {
	if s.state == stateHeld && (mode == modeRegister || mode == modeTakeover) {
		s.state = stateRegistered
	}
	return s
}

// parseSyncReply checks the shape of a sync.lua reply, so that a foreign
// script with the same SHA or a proxy that mangles replies yields an error
// instead of a panic.
func parseSyncReply(v interface{}) (syncReply, error) {
	arr, ok := v.([]interface{})
	if !ok || len(arr) != 4 {
		return syncReply{}, fmt.Errorf("streamcancel: unexpected reply from sync script: %v", v)
	}
	state, ok1 := arr[0].(int64)
	canceled, ok2 := arr[1].(int64)
	node, ok3 := arr[2].(string)
	reason, ok4 := arr[3].(string)
	if !ok1 || !ok2 || !ok3 || !ok4 || state < stateTakenOver || state > stateRegistered {
		return syncReply{}, fmt.Errorf("streamcancel: unexpected reply from sync script: %v", v)
	}
	return syncReply{state: state, canceled: canceled == 1, node: node, reason: reason}, nil
}

// cancelCall identifies one Cancel, CancelAndWait or CancelGroup call to
// cancel.lua, which stores the call's result under its ID, so that a send
// that go-redis repeats returns the result of the first.
type cancelCall struct {
	id     string
	prefix string

	// lease is how long cancel.lua keeps the result: longer than the call
	// may go on resending.
	lease time.Duration
}

func newCancelCall(prefix string, timeout time.Duration) cancelCall {
	return cancelCall{id: randomHex(8), prefix: prefix, lease: timeout + time.Second}
}

// args returns the ARGV of cancel.lua for this call: token empty cancels
// the active run, waiter names the node that waits for the run's end for
// wait, and pendingTTL positive stores a pending cancel when no run is
// active.
func (c cancelCall) args(reason, token, waiter string, wait, pendingTTL time.Duration) []interface{} {
	return []interface{}{nodeChannelPrefix(c.prefix), reason, token, waiter, wait.Milliseconds(), pendingTTL.Milliseconds(), c.id, c.lease.Milliseconds()}
}

// cancelReply is the parsed reply of cancel.lua.
type cancelReply struct {
	found     bool
	pending   bool
	node      string
	receivers int64
	token     string
}

func parseCancelReply(v interface{}) (cancelReply, error) {
	arr, ok := v.([]interface{})
	if !ok || len(arr) == 0 {
		return cancelReply{}, fmt.Errorf("streamcancel: unexpected reply from cancel script: %v", v)
	}
	found, ok := arr[0].(int64)
	if !ok {
		return cancelReply{}, fmt.Errorf("streamcancel: unexpected reply from cancel script: %v", v)
	}
	if found == 0 {
		if len(arr) != 2 {
			return cancelReply{}, fmt.Errorf("streamcancel: unexpected reply from cancel script: %v", v)
		}
		pending, ok := arr[1].(int64)
		if !ok {
			return cancelReply{}, fmt.Errorf("streamcancel: unexpected reply from cancel script: %v", v)
		}
		return cancelReply{pending: pending == 1}, nil
	}
	if len(arr) != 4 {
		return cancelReply{}, fmt.Errorf("streamcancel: unexpected reply from cancel script: %v", v)
	}
	node, ok1 := arr[1].(string)
	receivers, ok2 := arr[2].(int64)
	token, ok3 := arr[3].(string)
	if !ok1 || !ok2 || !ok3 {
		return cancelReply{}, fmt.Errorf("streamcancel: unexpected reply from cancel script: %v", v)
	}
	return cancelReply{found: true, node: node, receivers: receivers, token: token}, nil
}

// groupMember is a run as a group.lua member: its token, a ':' and its
// stream ID. Tokens have a fixed length, so the first ':' after the
// token ends it whatever the stream ID contains.
func groupMember(token, streamID string) string {
	return token + ":" + streamID
}

// parseGroupMember splits a member made by groupMember. It reports false
// for a value of another shape.
func parseGroupMember(member string) (token, streamID string, ok bool) {
	if len(member) < tokenLen+2 || member[tokenLen] != ':' {
		return "", "", false
	}
	return member[:tokenLen], member[tokenLen+1:], true
}

// isNoScript reports whether err is Redis's NOSCRIPT error for a missing script, as after
// a restart or SCRIPT FLUSH.
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
