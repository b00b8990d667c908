package streamcancel

import (
	"fmt"
	"strings"
)

// MaxStreamIDLen is the maximum length of a stream ID in bytes. Longer IDs
// are rejected with ErrInvalidStreamID; hash them first if needed.
const MaxStreamIDLen = 512

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

// tagEscaper makes a stream ID safe inside a Redis Cluster hash tag. The
// tag ends at the first '}', so '}' is escaped, and '%' is escaped so
// that the mapping stays one to one.
var tagEscaper = strings.NewReplacer("%", "%25", "}", "%7D")

// runKey returns the key of a stream's active marker. The whole escaped ID
// is the hash tag, so every key of one stream maps to one cluster slot
// and no two IDs share a key.
func runKey(prefix, streamID string) string {
	return prefix + ":{" + tagEscaper.Replace(streamID) + "}:run"
}

// nodeChannelPrefix returns the prefix of the per-node cancel channels.
// The channel of a node is this prefix followed by the node ID.
func nodeChannelPrefix(prefix string) string {
	return prefix + ":node:"
}
