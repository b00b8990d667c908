package streamcancel

import (
	"context"
	"errors"

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
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	if cluster, ok := rdb.(*redis.ClusterClient); ok {
		cluster.ReloadState(context.Background())
	}
}
