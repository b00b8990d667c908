package streamcancel

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net/url"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Any byte string is a valid stream ID when it is 1 to MaxStreamIDLen
// bytes long. Its key's hash tag is the escaped ID, contains no '}' and
// unescapes to the ID, so no two IDs share a key. A run of it starts,
// stores its marker at exactly that key, is canceled and closes without
// leaving the key behind.
func FuzzStreamID(f *testing.F) {
	for _, id := range []string{"a", "chat-1", "{", "}", "{}", "a}b", "%", "%7D", "x\ny", "cuộc", "\x00\xff", ""} {
		f.Add(id)
	}
	m := miniredis.RunT(f)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	f.Cleanup(func() { _ = rdb.Close() })
	reg, err := NewRegistry(rdb, WithKeyPrefix("fz"), WithNodeID("node-a"))
	require.NoError(f, err)
	f.Cleanup(func() { _ = reg.Close() })

	f.Fuzz(func(t *testing.T, id string) {
		err := validateStreamID(id)
		if id == "" || len(id) > MaxStreamIDLen {
			require.ErrorIs(t, err, ErrInvalidStreamID, "ID of %d bytes", len(id))
			_, err = reg.Start(context.Background(), id)
			require.ErrorIs(t, err, ErrInvalidStreamID)
			return
		}
		require.NoError(t, err)

		key := runKey("fz", id)
		tag := hashTag(key)
		require.Equal(t, "fz:{"+tag+"}:run", key)
		require.NotContains(t, tag, "}")
		unescaped, err := url.PathUnescape(tag)
		require.NoError(t, err, "unescaping tag %q", tag)
		require.Equal(t, id, unescaped, "ID recovered from its key")

		chk, err := reg.Start(context.Background(), id)
		require.NoError(t, err)
		require.True(t, m.Exists(key), "marker at %q", key)
		res, err := reg.Cancel(context.Background(), id)
		require.NoError(t, err)
		require.True(t, res.Found)
		require.True(t, chk.Cancelled())
		require.NoError(t, chk.Close())
		require.False(t, m.Exists(key), "marker at %q after Close", key)
	})
}

// replyDecoder turns fuzz bytes into a value of the kinds go-redis returns
// for a script reply: nil, int64, string, bool, float64, errors and
// nested arrays.
type replyDecoder struct {
	b []byte
}

func (d *replyDecoder) byte() byte {
	if len(d.b) == 0 {
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *replyDecoder) value(depth int) interface{} {
	switch d.byte() % 8 {
	case 0:
		return nil
	case 1:
		// Small integers hit the states and flags the parsers check.
		return int64(int8(d.byte())) % 4
	case 2:
		var buf [8]byte
		n := copy(buf[:], d.b)
		d.b = d.b[n:]
		return int64(binary.BigEndian.Uint64(buf[:]))
	case 3:
		n := min(int(d.byte()%32), len(d.b))
		s := string(d.b[:n])
		d.b = d.b[n:]
		return s
	case 4:
		return d.byte()%2 == 1
	case 5:
		return math.Float64frombits(uint64(d.byte()) << 56)
	case 6:
		return errors.New("ERR " + string(rune('a'+d.byte()%26)))
	default:
		if depth == 0 {
			return nil
		}
		arr := make([]interface{}, d.byte()%6)
		for i := range arr {
			arr[i] = d.value(depth - 1)
		}
		return arr
	}
}

func decodeReply(b []byte) interface{} {
	d := &replyDecoder{b: b}
	return d.value(3)
}

// The parsers of script replies return an error for any value that does
// not have the script's shape, never panic, and on success return only
// states the scripts produce.
func FuzzParseReplies(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{7, 3, 1, 1, 1, 1, 3, 6, 'n', 'o', 'd', 'e', '-', 'a'}) // {1, 1, "node-a"}
	f.Add([]byte{7, 1, 1, 0})                                           // {0}
	f.Add([]byte{7, 4, 1, 1, 3, 1, 'n', 1, 1, 3, 2, 't', 'k'})          // {1, "n", 1, "tk"}
	f.Add([]byte{7, 3, 2, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0})       // huge state
	f.Add([]byte{7, 3, 6, 1, 5, 1, 4, 1})                               // error, float, bool

	f.Fuzz(func(t *testing.T, data []byte) {
		v := decodeReply(data)

		sync, err := parseSyncReply(v)
		if err == nil {
			assert.GreaterOrEqual(t, sync.state, int64(stateOther), "state of %#v", v)
			assert.LessOrEqual(t, sync.state, int64(stateRegistered), "state of %#v", v)
		} else {
			assert.Equal(t, syncReply{}, sync)
			assert.Contains(t, err.Error(), "unexpected reply")
		}

		cancel, err := parseCancelReply(v)
		if err != nil {
			assert.Equal(t, cancelReply{}, cancel)
			assert.Contains(t, err.Error(), "unexpected reply")
		}
		if !cancel.found {
			assert.Equal(t, cancelReply{}, cancel, "reply of a cancel that found no run: %#v", v)
		}
	})
}
