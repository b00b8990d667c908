package streamcancel

import (
	_ "embed"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed sync.lua
	syncSource string

	//go:embed cancel.lua
	cancelSource string

	//go:embed release.lua
	releaseSource string

	syncScript    = redis.NewScript(syncSource)
	cancelScript  = redis.NewScript(cancelSource)
	releaseScript = redis.NewScript(releaseSource)
)

// Modes of sync.lua.
const (
	modeRegister = "register"
	modeExtend   = "extend"
	modeRead     = "read"
)

// Marker states returned by sync.lua.
const (
	stateOther      = -1 // another run holds the stream
	stateMissing    = 0  // no marker
	stateHeld       = 1  // the marker is this run's
	stateRegistered = 2  // this call created the marker
)

// syncReply is the parsed reply of sync.lua.
type syncReply struct {
	state    int64
	canceled bool
	node     string
}

// parseSyncReply checks the shape of a sync.lua reply, so that a foreign
// script with the same SHA or a proxy that mangles replies yields an error
// instead of a panic.
func parseSyncReply(v interface{}) (syncReply, error) {
	arr, ok := v.([]interface{})
	if !ok || len(arr) != 3 {
		return syncReply{}, fmt.Errorf("streamcancel: unexpected reply from sync script: %v", v)
	}
	state, ok1 := arr[0].(int64)
	canceled, ok2 := arr[1].(int64)
	node, ok3 := arr[2].(string)
	if !ok1 || !ok2 || !ok3 || state < stateOther || state > stateRegistered {
		return syncReply{}, fmt.Errorf("streamcancel: unexpected reply from sync script: %v", v)
	}
	return syncReply{state: state, canceled: canceled == 1, node: node}, nil
}

// cancelReply is the parsed reply of cancel.lua.
type cancelReply struct {
	found     bool
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
		return cancelReply{}, nil
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

// isNoScript reports whether err is Redis's NOSCRIPT error for a missing script, as after
// a restart or SCRIPT FLUSH.
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
