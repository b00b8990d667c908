package streamcancel

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// This file holds what differs on Redis Cluster. Everything else works the
// same on one Redis, a Sentinel-managed primary and a cluster, because:
//
//   - Every key of a stream carries the stream's hash tag (runKey), and
//     every script takes exactly the keys of one stream, so each script
//     call touches one slot.
//   - Pipelines hold only such script calls. A *redis.ClusterClient splits
//     a pipeline by the primary that serves each command's first key,
//     sends the parts to their nodes in parallel and follows MOVED and ASK
//     replies itself, so no pipeline sends a cross-slot command.
//   - A push is a classic PUBLISH on the node channel, sent from inside the
//     script that stores the record. Redis Cluster forwards a classic
//     PUBLISH to every node, so the subscriber hears it on whichever node
//     its connection landed. SPUBLISH would not do: a script may only
//     touch channels of its own keys' slot.
//   - While a resharding migrates a stream's slot, Redis rejects every
//     script on the stream's keys with TRYAGAIN, because the keys a script
//     names may sit partly on each of the two primaries, and go-redis
//     gives up after MaxRedirects redirects. Cancel and CancelGroup try
//     again until the migration ends or their time runs out (untilStable,
//     pipelineStable). Background passes fail open and try again at the
//     next pass.
//   - SCRIPT LOAD on a *redis.ClusterClient goes to every primary and
//     replica, and a script call that still meets NOSCRIPT falls back to
//     EVAL (pipelineScript, Script.Run).

// refreshTopology makes a cluster client reload its map of slots and nodes
// after a failed call. go-redis reloads the map by itself only after a
// MOVED reply or when it is more than 10 seconds old. Until then it keeps
// sending the slots of a primary that died to that primary, even after a
// replica has taken over. go-redis reloads on a goroutine of its own, at
// most one at a time, so calling this after every failure is cheap. Other
// clients need nothing.
func refreshTopology(rdb redis.UniversalClient, err error) {
	// redis.Nil is a reply, such as a missing hash field, not a failure.
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, redis.Nil) {
		return
	}
	if cluster, ok := rdb.(*redis.ClusterClient); ok {
		cluster.ReloadState(context.Background())
	}
}

// untilStable calls fn until it returns anything but an error of a slot
// that is being migrated (isUnstable), or ctx ends, and returns the last
// result. A slot that holds many keys can take seconds to migrate, but
// go-redis tries such a call only MaxRedirects times, within tens of
// milliseconds.
func untilStable[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	return retry(ctx, isUnstable, minUnstableDelay, maxUnstableDelay, fn)
}

// pipelineStable is pipelineScript for calls that must not fail while a
// resharding migrates their slots: it sends the calls that meet an error
// of a migrating slot again, as untilStable does, until none does or ctx
// ends.
func (r *Registry) pipelineStable(ctx context.Context, script *redis.Script, calls []scriptCall) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	todo := make([]int, len(calls))
	for i := range todo {
		todo[i] = i
	}

	_, _ = untilStable(ctx, func() (struct{}, error) {
		batch := make([]scriptCall, len(todo))
		for j, i := range todo {
			batch[j] = calls[i]
		}
		var again []int
		var err error
		for j, cmd := range r.pipelineScript(ctx, script, batch) {
			cmds[todo[j]] = cmd
			if isUnstable(cmd.Err()) {
				again, err = append(again, todo[j]), cmd.Err()
			}
		}
		todo = again
		return struct{}{}, err
	})
	return cmds
}

// isUnstable reports whether err is an error of a slot that is being
// migrated: TRYAGAIN for a multi-key command, or a MOVED or ASK reply
// that go-redis did not follow because the call had used up its
// MaxRedirects (3 by default) on the way.
func isUnstable(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "TRYAGAIN ") || strings.HasPrefix(msg, "MOVED ") || strings.HasPrefix(msg, "ASK ")
}
