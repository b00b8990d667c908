package streamcancel

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxStreamIDLen is the maximum length of a stream ID in bytes. Longer IDs
// are rejected with ErrInvalidStreamID; hash them first if needed.
const MaxStreamIDLen = 512

// MaxGroupLen is the maximum length of a group name in bytes.
const MaxGroupLen = 256

// MaxReasonLen is the maximum length of a cancel reason in bytes.
const MaxReasonLen = 256

// validateStreamID returns an error matching ErrInvalidStreamID for an
// empty or too long ID. Any other byte sequence is valid.
func validateStreamID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: the ID is empty; pass the ID of the stream to start or cancel", ErrInvalidStreamID)
	}
	if len(id) > MaxStreamIDLen {
		return fmt.Errorf("%w: the ID is %d bytes, the maximum is %d; use a shorter ID or a hash of it", ErrInvalidStreamID, len(id), MaxStreamIDLen)
	}
	return nil
}

// validateGroup returns an error matching ErrInvalidGroup for an empty or
// too long group name. Any other byte sequence is valid.
func validateGroup(group string) error {
	if group == "" {
		return fmt.Errorf("%w: the group name is empty; pass the name of a conversation, user or other set of runs", ErrInvalidGroup)
	}
	if len(group) > MaxGroupLen {
		return fmt.Errorf("%w: the group name %.32q... is %d bytes, the maximum is %d; use a shorter name or a hash of it", ErrInvalidGroup, group, len(group), MaxGroupLen)
	}
	return nil
}

// validateReason returns an error matching ErrInvalidReason for a reason
// that is empty, too long, not UTF-8 or contains control characters. The
// reason travels in Pub/Sub messages and ends up in logs, so it is plain
// text on one line.
func validateReason(reason string) error {
	switch {
	case reason == "":
		return fmt.Errorf("%w: the reason is empty; leave out WithReason to cancel without a reason", ErrInvalidReason)
	case len(reason) > MaxReasonLen:
		return fmt.Errorf("%w: the reason %.32q... is %d bytes, the maximum is %d; shorten it", ErrInvalidReason, reason, len(reason), MaxReasonLen)
	case !utf8.ValidString(reason):
		return fmt.Errorf("%w: the reason %q is not valid UTF-8; pass UTF-8 text", ErrInvalidReason, reason)
	case strings.IndexFunc(reason, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: the reason %q contains a control character such as a newline or tab; pass text on one line", ErrInvalidReason, reason)
	}
	return nil
}

// tagEscaper makes a stream ID safe inside a Redis Cluster hash tag. The
// tag ends at the first '}', so '}' is escaped, and '%' is escaped so
// that the mapping stays one to one.
var tagEscaper = strings.NewReplacer("%", "%25", "}", "%7D")

// runKey returns the key of a stream's active marker. The whole escaped ID
// is the hash tag, so every key of one stream maps to one cluster slot
// and no two IDs share a key.
func runKey(prefix, streamID string) string {
	return streamKey(prefix, streamID, "run")
}

// streamKey returns the key of a stream's record named name. All keys of
// one stream share the hash tag of runKey.
//
//   - "run": the active marker, a hash with the token, node, cancel and
//     reason of the active run.
//   - "pending": a cancel stored while no run was active.
//   - "over": a hash from the tokens of runs replaced by a takeover to the
//     node of the run that replaced them.
//   - "wait": a hash whose fields are a run's token and the ID of a node
//     that waits for the run's end, separated by ':'.
//   - "ended": a hash from the tokens of ended runs to how long each took
//     to stop after its cancel, in microseconds.
//   - "calls": a hash from the IDs of recent cancel calls that stopped a
//     run or stored a pending cancel to their results.
func streamKey(prefix, streamID, name string) string {
	return prefix + ":{" + tagEscaper.Replace(streamID) + "}:" + name
}

// cancelKeys returns the KEYS of cancel.lua for a stream.
func cancelKeys(prefix, streamID string) []string {
	return []string{runKey(prefix, streamID), streamKey(prefix, streamID, "pending"), streamKey(prefix, streamID, "wait"), streamKey(prefix, streamID, "calls")}
}

// groupKey returns the key of a group's members, a sorted set. The escaped
// group name is its hash tag, so a group's bookkeeping sits in one slot,
// and no script touches both a group's key and a stream's keys.
func groupKey(prefix, group string) string {
	return prefix + ":group:{" + tagEscaper.Replace(group) + "}:runs"
}

// nodeChannelPrefix returns the prefix of the per-node cancel channels.
// The channel of a node is this prefix followed by the node ID.
func nodeChannelPrefix(prefix string) string {
	return prefix + ":node:"
}
