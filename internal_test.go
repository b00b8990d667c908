package streamcancel

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hashTag returns the part of key that Redis Cluster hashes: the bytes
// between the first '{' and the first '}' after it, when that is not
// empty, else the whole key.
func hashTag(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	end := strings.IndexByte(key[open+1:], '}')
	if end <= 0 {
		return key
	}
	return key[open+1 : open+1+end]
}

// The run key's hash tag is the whole escaped stream ID, whatever bytes
// the ID contains, and no two IDs share a key.
func TestRunKeyHashTag(t *testing.T) {
	ids := []string{"a", "{", "}", "{}", "}{", "a}b", "a%7Db", "%", "%25", "{a}", "a{b}c", "x\ny", "cuộc"}
	seen := map[string]string{}
	for _, id := range ids {
		key := runKey("streamcancel", id)
		tag := hashTag(key)
		assert.Equal(t, tagEscaper.Replace(id), tag, "hash tag of the key of %q", id)
		assert.NotContains(t, tag, "}", "hash tag of %q", id)
		if other, ok := seen[key]; ok {
			t.Errorf("IDs %q and %q share key %q", id, other, key)
		}
		seen[key] = id
	}
}

func TestParseRepliesRejectForeignValues(t *testing.T) {
	syncCases := []interface{}{
		nil, "OK", int64(1), []interface{}{}, []interface{}{int64(1), int64(0)},
		[]interface{}{"1", int64(0), "a"}, []interface{}{int64(7), int64(0), "a"},
		[]interface{}{int64(1), int64(0), int64(3)}, []interface{}{int64(1), int64(0), "a"},
		[]interface{}{int64(-3), int64(0), "a", ""}, []interface{}{int64(1), int64(0), "a", int64(1)},
	}
	for i, v := range syncCases {
		_, err := parseSyncReply(v)
		assert.Error(t, err, "case %d: %#v", i, v)
	}
	reply, err := parseSyncReply([]interface{}{int64(1), int64(1), "node-a", "user pressed Stop"})
	require.NoError(t, err)
	assert.Equal(t, syncReply{state: stateHeld, canceled: true, node: "node-a", reason: "user pressed Stop"}, reply)

	cancelCases := []interface{}{
		nil, "x", []interface{}{}, []interface{}{"0"}, []interface{}{int64(1)},
		[]interface{}{int64(1), "a", "b", "c"}, []interface{}{int64(1), "a", int64(1), int64(2)},
		[]interface{}{int64(0)}, []interface{}{int64(0), "1"},
	}
	for i, v := range cancelCases {
		_, err := parseCancelReply(v)
		assert.Error(t, err, "case %d: %#v", i, v)
	}
	got, err := parseCancelReply([]interface{}{int64(0), int64(1)})
	require.NoError(t, err)
	assert.False(t, got.found)
	assert.True(t, got.pending)

	for _, member := range []string{"", "chat-1", "0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef-chat-1"} {
		_, _, ok := parseGroupMember(member)
		assert.False(t, ok, "member %q", member)
	}
	token, streamID, ok := parseGroupMember(groupMember("0123456789abcdef0123456789abcdef", "a:b:c"))
	require.True(t, ok)
	assert.Equal(t, "0123456789abcdef0123456789abcdef", token)
	assert.Equal(t, "a:b:c", streamID)
}

func TestErrorLogLimitsRecords(t *testing.T) {
	var buf strings.Builder
	l := errorLog{logger: slog.New(slog.NewTextHandler(&buf, nil)), interval: 100 * time.Millisecond}

	for i := 0; i < 10; i++ {
		l.log(kindSync, "chat-1", "node-a", assert.AnError)
	}
	l.log(kindStart, "chat-2", "node-a", assert.AnError)
	assert.Equal(t, 2, strings.Count(buf.String(), "\n"), "records: %s", buf.String())
	assert.Contains(t, buf.String(), "stream_id=chat-1")
	assert.Contains(t, buf.String(), "stream_id=chat-2")

	time.Sleep(110 * time.Millisecond)
	l.log(kindSync, "chat-3", "node-a", assert.AnError)
	assert.Contains(t, buf.String(), "stream_id=chat-3")
	assert.Contains(t, buf.String(), "suppressed=9")
}

func TestPingIntervalFollowsPollInterval(t *testing.T) {
	tests := []struct {
		poll time.Duration
		want time.Duration
	}{
		{10 * time.Millisecond, 100 * time.Millisecond},
		{time.Second, time.Second},
		{time.Hour, 5 * time.Second},
	}
	for _, tt := range tests {
		cfg := config{pollInterval: tt.poll}
		assert.Equal(t, tt.want, cfg.pingInterval(), "poll interval %v", tt.poll)
	}
}

// While the push path is down, every CheckEvery-th call of Cancelled requests
// a poll of the run's record, so a cancel whose push was lost is seen
// long before the next periodic poll.
func TestCancelledRequestsPollWhenPushDown(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	r, err := NewRegistry(rdb, WithPollInterval(time.Hour), WithCheckEvery(10))
	require.NoError(t, err)
	defer r.Close()
	require.Eventually(t, r.pushReady.Load, 5*time.Second, time.Millisecond)
	// Let the pass that follows the subscription finish, so that only a
	// poll requested by Cancelled can read the record written below.
	time.Sleep(200 * time.Millisecond)

	chk, err := r.Start(context.Background(), "chat-1")
	require.NoError(t, err)
	defer chk.Close()
	m.HSet(chk.key, "cancel", chk.token)

	// The push path is up: no poll is requested.
	for i := 0; i < 100; i++ {
		require.False(t, chk.Cancelled())
	}
	time.Sleep(50 * time.Millisecond)
	require.False(t, chk.Cancelled(), "Cancelled() with the push path up and no poll due")

	r.pushReady.Store(false)
	for i := 0; i < 9; i++ {
		require.False(t, chk.Cancelled(), "call %d", i)
	}
	assert.Eventually(t, chk.Cancelled, time.Second, time.Millisecond, "Cancelled() after the 10th call")
}

// A run has at most one poll request queued at a time, however often
// Cancelled is called while the push path is down.
func TestPollRequestQueuedOnce(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	r, err := NewRegistry(rdb, WithCheckEvery(1))
	require.NoError(t, err)

	chk, err := r.Start(context.Background(), "chat-1")
	require.NoError(t, err)
	defer chk.Close()

	// Close stops the loop that drains the queue, and the Checker keeps
	// working locally.
	require.NoError(t, r.Close())
	require.False(t, r.pushReady.Load())
	for i := 0; i < 100; i++ {
		require.False(t, chk.Cancelled(), "call %d", i)
	}
	assert.Len(t, r.pollQueue, 1, "queued poll requests")
}
