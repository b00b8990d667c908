package streamcancel_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamcancel/streamcancel"
)

// libraryCommands are the Redis commands that the library sends, together
// with the commands its Lua scripts call, which ACL checks too. The ACL
// rule in README.md lists the same commands in the same order, and
// TestReadmeACLRuleListsCommands checks that. A new command also needs a
// step in exerciseEveryCommand that sends it, or the test that removes it
// from the rule fails.
var libraryCommands = []string{
	// Every script call: EVALSHA first, EVAL when Redis lacks the script,
	// and SCRIPT LOAD after each subscribe and when a pipeline finds the
	// script missing.
	"evalsha", "eval", "script|load",

	// The subscriber: SUBSCRIBE to the node's channel and a PING after a
	// quiet period.
	"subscribe", "ping",

	// Inside sync.lua, cancel.lua and release.lua; CancelAndWait also
	// reads the ended record with HGET.
	"hmget", "hset", "pexpire", "publish", "type", "hget", "del",

	// Pending cancels (cancel.lua, sync.lua) and the waiters and ended
	// records of CancelAndWait (cancel.lua, release.lua).
	"set", "get", "hdel", "hkeys", "pttl",

	// Groups, in group.lua.
	"time", "zadd", "zrange", "zrem", "zremrangebyscore",
}

// aclUser creates user on admin's server with access to exactly commands,
// the keys under prefix and the channels of prefix's nodes, and returns a
// client that logs in as that user, closed when the test ends.
func aclUser(t *testing.T, e *env, admin *redis.Client, user string, commands []string) *redis.Client {
	args := []interface{}{"ACL", "SETUSER", user, "reset", "on", ">secret",
		"~" + e.prefix + ":*", "&" + e.prefix + ":node:*", "-@all"}
	for _, cmd := range commands {
		args = append(args, "+"+cmd)
	}
	require.NoError(t, admin.Do(ctx, args...).Err(), "ACL SETUSER %s", user)

	c := redis.NewClient(&redis.Options{Addr: e.addr, Username: user, Password: "secret"})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// aclDenials returns the entries of the server's ACL LOG as text and
// resets the log.
func aclDenials(t *testing.T, admin *redis.Client) []string {
	entries, err := admin.Do(ctx, "ACL", "LOG").Slice()
	require.NoError(t, err)
	require.NoError(t, admin.Do(ctx, "ACL", "LOG", "RESET").Err())

	denials := make([]string, len(entries))
	for i, entry := range entries {
		denials[i] = fmt.Sprint(entry)
	}
	return denials
}

// exerciseEveryCommand takes runs through every path that sends a
// command: Start with and without the script loaded in Redis, polls, lease
// refreshes, the subscriber's PING, a pending cancel, a takeover, a group
// cancel, a pushed CancelAndWait from another node and Checker.Close. It
// returns the errors the registries counted.
func exerciseEveryCommand(t *testing.T, e *env, rdb, admin *redis.Client, run string) uint64 {
	opts := []streamcancel.Option{
		streamcancel.WithPollInterval(50 * time.Millisecond),
		streamcancel.WithTTL(300 * time.Millisecond),
		streamcancel.WithPendingCancel(time.Second),
	}
	a := e.registryOn(t, rdb, "node-a-"+run, opts...)
	b := e.registryOn(t, rdb, "node-b-"+run, opts...)

	// The subscriber loads the scripts once subscribed. Flushing them
	// afterwards makes Start fall back from EVALSHA to EVAL.
	require.Eventually(t, func() bool { return a.Stats().Subscribed || a.Stats().SubscribeErrors > 0 }, 3*time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, admin.ScriptFlush(ctx).Err())

	// endOnCancel closes a run's Checker once its context is done, as a
	// loop would. The closes finish before this function returns, so no
	// command of this run reaches the ACL LOG of the next.
	var loops sync.WaitGroup
	defer loops.Wait()
	endOnCancel := func(chk *streamcancel.Checker) {
		loops.Add(1)
		go func() {
			defer loops.Done()
			select {
			case <-chk.Context().Done():
			case <-time.After(500 * time.Millisecond):
			}
			_ = chk.Close()
		}()
	}

	chk, err := a.Start(ctx, run, streamcancel.WithGroup("group-"+run))
	require.NoError(t, err)
	endOnCancel(chk)
	member, err := a.Start(ctx, run+"-member", streamcancel.WithGroup("group-"+run))
	require.NoError(t, err)
	endOnCancel(member)
	time.Sleep(300 * time.Millisecond) // polls, refreshes and PINGs

	if _, err := b.Cancel(ctx, run+"-pending", streamcancel.WithReason("stop")); err == nil {
		if pending, err := a.Start(ctx, run+"-pending"); err == nil {
			_ = pending.Close()
		}
	}
	if old, err := a.Start(ctx, run+"-old"); err == nil {
		endOnCancel(old)
		if taker, err := b.Start(ctx, run+"-old", streamcancel.WithTakeover()); err == nil {
			_ = taker.Close()
		}
	}

	waitCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, _ = b.CancelAndWait(waitCtx, run)
	_, _ = b.CancelGroup(ctx, "group-"+run)
	_ = chk.Close()
	_ = member.Close()
	loops.Wait()

	// A Close that failed leaves the marker to the registry, which tries
	// again until Registry.Close, and Registry.Close tries once more.
	// Closing here keeps those commands in this run's ACL LOG.
	sa, sb := a.Stats(), b.Stats()
	_ = a.Close()
	_ = b.Close()
	return sa.StartErrors + sa.SyncErrors + sa.SubscribeErrors + sa.ReleaseErrors + sb.CancelErrors + sb.SubscribeErrors + sb.StartErrors + sb.ReleaseErrors
}

// The library works as an ACL user allowed exactly libraryCommands on its
// key prefix and its nodes' channels: no command is denied, and a pushed
// cancel arrives. Each of those commands is needed: a user without it is
// denied at least once.
func TestLeastPrivilegeACL(t *testing.T) {
	e := ownServer(t)
	admin := e.client(t)

	t.Run("exact rule", func(t *testing.T) {
		rdb := aclUser(t, e, admin, "streamcancel", libraryCommands)
		errs := exerciseEveryCommand(t, e, rdb, admin, "exact")
		assert.Empty(t, aclDenials(t, admin), "ACL LOG")
		assert.Zero(t, errs, "errors counted by the registries")
		for _, key := range e.keys(t, admin) {
			assert.True(t, strings.HasSuffix(key, ":ended"), "key %s left after the runs closed; only ended records stay, for their TTL", key)
			assert.Positive(t, admin.PTTL(ctx, key).Val(), "PTTL of %s", key)
		}
	})

	for i, missing := range libraryCommands {
		t.Run("without "+missing, func(t *testing.T) {
			commands := append(append([]string{}, libraryCommands[:i]...), libraryCommands[i+1:]...)
			rdb := aclUser(t, e, admin, fmt.Sprintf("without-%d", i), commands)
			exerciseEveryCommand(t, e, rdb, admin, fmt.Sprintf("without-%d", i))
			denials := aclDenials(t, admin)
			assert.NotEmpty(t, denials, "ACL LOG of a user without %s", missing)
			for _, d := range denials {
				assert.Contains(t, d, strings.Split(missing, "|")[0], "ACL LOG entry of a user without %s", missing)
			}
		})
	}
}

// With SUBSCRIBE denied and every other command allowed, a registry works
// through polling: every CheckEvery-th Cancelled call polls the run, so a
// cancel stops it long before the next periodic poll. Meanwhile the number
// of its connections and goroutines stays flat, and the subscribe error is
// logged once, however often the subscriber retries.
func TestSubscribeDeniedPollsWithoutLeaks(t *testing.T) {
	const (
		poll = 4 * time.Second
		idle = 3 * time.Second
	)
	e := ownServer(t)
	admin := e.client(t)
	var commands []string
	for _, cmd := range libraryCommands {
		if cmd != "subscribe" {
			commands = append(commands, cmd)
		}
	}
	rdb := aclUser(t, e, admin, "nosub", commands)
	logs := &logRecorder{}
	a := e.registryOn(t, rdb, "node-a", streamcancel.WithPollInterval(poll), streamcancel.WithCheckEvery(5), streamcancel.WithLogger(slog.New(logs)))
	b := e.registry(t, "node-b")

	chk, err := a.Start(ctx, "chat-1")
	require.NoError(t, err)
	defer chk.Close()
	ended := make(chan time.Time, 1)
	go func() {
		stream(chk, time.Millisecond, 100000)
		ended <- time.Now()
	}()

	// connections counts the server's connections of the user.
	connections := func() int {
		list, err := admin.ClientList(ctx).Result()
		require.NoError(t, err)
		return strings.Count(list, " user=nosub ")
	}
	time.Sleep(500 * time.Millisecond)
	firstConns, firstGoroutines := connections(), runtime.NumGoroutine()
	maxConns, maxGoroutines := firstConns, firstGoroutines
	for begin := time.Now(); time.Since(begin) < idle; time.Sleep(50 * time.Millisecond) {
		maxConns = max(maxConns, connections())
		maxGoroutines = max(maxGoroutines, runtime.NumGoroutine())
	}
	lastConns, lastGoroutines := connections(), runtime.NumGoroutine()
	t.Logf("over %v with SUBSCRIBE denied: connections %d first, %d max, %d last; goroutines %d first, %d max, %d last; subscribe errors %d, log records %d",
		idle, firstConns, maxConns, lastConns, firstGoroutines, maxGoroutines, lastGoroutines, a.Stats().SubscribeErrors, len(logs.find("subscribe failed")))
	assert.LessOrEqual(t, maxConns, firstConns+1, "connections of the user")
	assert.LessOrEqual(t, lastConns, firstConns, "connections of the user at the end")
	assert.LessOrEqual(t, maxGoroutines, firstGoroutines+5, "goroutines")
	assert.GreaterOrEqual(t, a.Stats().SubscribeErrors, uint64(3), "subscribe attempts that failed")
	assert.Len(t, logs.find("subscribe failed"), 1, "subscribe error log records in %v, within one log interval", idle)
	assert.False(t, a.Stats().Subscribed)

	start := time.Now()
	res, err := b.Cancel(ctx, "chat-1")
	require.NoError(t, err)
	require.True(t, res.Found)
	assert.False(t, res.Pushed, "push with no subscriber")
	select {
	case end := <-ended:
		t.Logf("stopped %v after the cancel through per-chunk polls", end.Sub(start))
		assert.Less(t, end.Sub(start), poll/4+300*time.Millisecond, "stop through per-chunk polls")
	case <-time.After(2 * poll):
		t.Fatal("run still active two poll intervals after the cancel")
	}
	assert.Zero(t, a.Stats().SyncErrors, "sync errors")
	for _, d := range aclDenials(t, admin) {
		assert.Contains(t, d, "subscribe", "ACL LOG entry")
	}
}

// The ACL rule in README.md allows exactly libraryCommands.
func TestReadmeACLRuleListsCommands(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)

	rule := "-@all"
	for _, cmd := range libraryCommands {
		rule += " +" + cmd
	}
	assert.Contains(t, string(readme), rule+"\n", "README.md's ACL rule")
}
