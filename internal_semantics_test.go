package streamcancel

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every key of a stream has the run key's hash tag, and a group's key has
// the escaped group name as its own, whatever bytes the names contain.
func TestKeysShareHashTag(t *testing.T) {
	for _, id := range []string{"a", "}", "{a}", "a%7Db", "x\ny"} {
		tag := hashTag(runKey("p", id))
		for _, name := range []string{"pending", "over", "wait", "ended"} {
			assert.Equal(t, tag, hashTag(streamKey("p", id, name)), "tag of the %s key of %q", name, id)
		}
		assert.Equal(t, tagEscaper.Replace(id), hashTag(groupKey("p", id)), "tag of the key of group %q", id)
		assert.NotEqual(t, runKey("p", id), groupKey("p", id), "group and stream named %q", id)
	}
}

// Every push goes through the push function of push.lua: no other script
// publishes by itself.
func TestScriptsPushThroughOneFunction(t *testing.T) {
	for _, file := range []string{"sync.lua", "cancel.lua", "release.lua", "group.lua"} {
		source, err := os.ReadFile(file)
		require.NoError(t, err)
		assert.NotContains(t, strings.ToUpper(string(source)), "PUBLISH", "%s publishes without push", file)
	}
	assert.Contains(t, pushSource, "'PUBLISH'")
	for _, source := range []string{syncSource, cancelSource, releaseSource} {
		assert.Contains(t, source, "push(", "script that notifies nodes")
	}
}

// Reasons are one line of UTF-8 text of bounded length, so a push message
// needs no escaping.
func TestValidateReason(t *testing.T) {
	for _, valid := range []string{"x", "user pressed Stop", "arrêt demandé", strings.Repeat("x", MaxReasonLen)} {
		assert.NoError(t, validateReason(valid), "reason %q", valid)
	}
	for _, invalid := range []string{"", "a\nb", "a\tb", "a\x00b", "\xff", strings.Repeat("x", MaxReasonLen+1)} {
		assert.ErrorIs(t, validateReason(invalid), ErrInvalidReason, "reason %q", invalid)
	}
}
