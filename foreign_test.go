package streamcancel_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// foreignValue is a value that something other than the library stored at
// a run key.
type foreignValue struct {
	// kind is the value's type: 0 string, 1 list, 2 set, 3 sorted set,
	// 4 hash. Larger numbers wrap around.
	kind byte

	// The members, or for a hash the fields and their values. A hash
	// whose two fields are equal has one field.
	field1, value1, field2, value2 string
}

func (v foreignValue) isHash() bool { return v.kind%5 == 4 }

// field returns the hash's value of name and whether the hash has it.
func (v foreignValue) field(name string) (string, bool) {
	switch {
	case !v.isHash():
		return "", false
	case v.field2 == name:
		return v.value2, true
	case v.field1 == name:
		return v.value1, true
	}
	return "", false
}

// store writes v at key with a TTL of a minute.
func (v foreignValue) store(c *redis.Client, key string) error {
	var err error
	switch v.kind % 5 {
	case 0:
		err = c.Set(ctx, key, v.value1, 0).Err()
	case 1:
		err = c.RPush(ctx, key, v.value1, v.value2).Err()
	case 2:
		err = c.SAdd(ctx, key, v.value1, v.value2).Err()
	case 3:
		err = c.ZAdd(ctx, key, redis.Z{Member: v.value1}, redis.Z{Score: 1, Member: v.value2}).Err()
	case 4:
		err = c.HSet(ctx, key, v.field1, v.value1, v.field2, v.value2).Err()
	}
	if err != nil {
		return err
	}
	return c.Expire(ctx, key, time.Minute).Err()
}

// foreignValueSeeds are the values the foreign value tests start from: one
// of each type, and hashes that look like a marker in part.
var foreignValueSeeds = []foreignValue{
	{kind: 0, value1: "not a hash"},
	{kind: 1, value1: "a", value2: "b"},
	{kind: 2, value1: "a", value2: "b"},
	{kind: 3, value1: "a", value2: "b"},
	{kind: 4, field1: "odd", value1: "x", field2: "fields", value2: "y"},
	{kind: 4, field1: "cancel", value1: "some-token", field2: "node", value2: "node-z"},
	{kind: 4, field1: "token", value1: "foreign-token", field2: "node", value2: "node-z"},
	{kind: 4, field1: "token", value1: "", field2: "token", value2: ""},
	{kind: 4, field1: "", value1: "", field2: "cancel", value2: ""},
}

// checkForeignValue stores v at the run key of id and runs the library
// over it: Start on a, polls, a Cancel from b, and Close. It checks what
// the README promises for such values: never a panic or a false cancel;
// a value that is not a hash makes Start fail open, Cancel fail with
// Redis's error, and is left alone; a hash with a token field is another
// run; a hash without one is a missing marker, which Start takes over.
// Every key it leaves has a TTL.
func checkForeignValue(t *testing.T, e *env, a, b *streamcancel.Registry, c *redis.Client, id string, v foreignValue) {
	key := e.runKey(id)
	require.NoError(t, v.store(c, key), "storing %+v", v)
	t.Cleanup(func() { _ = c.Del(ctx, key).Err() })
	_, hasToken := v.field("token")

	chk, err := a.Start(ctx, id)
	if hasToken {
		require.ErrorIs(t, err, streamcancel.ErrAlreadyActive, "Start over %+v", v)
	} else {
		require.NoError(t, err, "Start over %+v", v)
		defer chk.Close()
		assert.Equal(t, !v.isHash(), a.Stats().UnregisteredRuns == 1, "run unregistered over %+v", v)
		stayActive(t, chk, 30*time.Millisecond) // several polls
	}

	res, err := b.Cancel(ctx, id)
	switch {
	case !v.isHash():
		assert.ErrorContains(t, err, "WRONGTYPE", "Cancel over %+v", v)
		assert.False(t, res.Found)
	case hasToken:
		require.NoError(t, err, "Cancel over %+v", v)
		node, _ := v.field("node")
		assert.True(t, res.Found, "Cancel over %+v", v)
		assert.Equal(t, node, res.NodeID)
	default:
		require.NoError(t, err, "Cancel over %+v", v)
		assert.True(t, res.Found, "Cancel over %+v", v)
		waitDone(t, chk, time.Second)
	}

	if chk != nil {
		_ = chk.Close()
	}
	typ, err := c.Type(ctx, key).Result()
	require.NoError(t, err)
	switch {
	case v.isHash() && !hasToken:
		assert.Equal(t, "none", typ, "key after Close of the run that took over %+v", v)
	default:
		assert.NotEqual(t, "none", typ, "%+v after the run", v)
		pttl, err := c.PTTL(ctx, key).Result()
		require.NoError(t, err)
		assert.Greater(t, pttl, time.Duration(0), "PTTL of %+v after the run", v)
	}
}

// Values of every type and hashes with odd fields at a run key are
// treated as checkForeignValue states, on miniredis and real Redis.
func TestForeignValueAtRunKey(t *testing.T) {
	eachBackend(t, func(t *testing.T, e *env) {
		opts := []streamcancel.Option{streamcancel.WithPollInterval(10 * time.Millisecond)}
		a := e.registry(t, "node-a", opts...)
		b := e.registry(t, "node-b", opts...)
		c := e.client(t)
		for i, v := range foreignValueSeeds {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				checkForeignValue(t, e, a, b, c, fmt.Sprintf("foreign-%d", i), v)
			})
		}
	})
}

// FuzzForeignValueAtRunKey runs checkForeignValue on miniredis with
// values the fuzzer makes up.
func FuzzForeignValueAtRunKey(f *testing.F) {
	for _, v := range foreignValueSeeds {
		f.Add(v.kind, v.field1, v.value1, v.field2, v.value2)
	}
	m := miniredis.RunT(f)
	e := &env{addr: m.Addr(), prefix: "fz", mini: m}
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer c.Close()
	opts := []streamcancel.Option{streamcancel.WithKeyPrefix(e.prefix), streamcancel.WithPollInterval(10 * time.Millisecond)}
	a, err := streamcancel.NewRegistry(c, append(opts, streamcancel.WithNodeID("node-a"))...)
	require.NoError(f, err)
	defer a.Close()
	b, err := streamcancel.NewRegistry(c, append(opts, streamcancel.WithNodeID("node-b"))...)
	require.NoError(f, err)
	defer b.Close()

	var runs atomic.Int64
	f.Fuzz(func(t *testing.T, kind byte, field1, value1, field2, value2 string) {
		v := foreignValue{kind: kind, field1: field1, value1: value1, field2: field2, value2: value2}
		checkForeignValue(t, e, a, b, c, fmt.Sprintf("foreign-%d", runs.Add(1)), v)
	})
}
