// Package streamcancel stops a streaming loop on one node when any other
// node of the service requests it, with Redis between the nodes.
//
// A [Registry] marks each active run of a stream in Redis with a lease,
// records cancels as stored records, pushes them over Pub/Sub and re-reads
// the records in the background. Each run gets a [Checker] whose
// per-chunk [Checker.Cancelled] call is a local atomic read. When Redis
// fails, the library fails open: streams keep going and cancels return
// errors instead of false successes. Redis may be one server, a primary
// managed by Sentinel or a Redis Cluster, through the matching go-redis
// client.
//
// A typical streaming handler:
//
//	chk, err := reg.Start(r.Context(), streamID)
//	if err != nil {
//		return err
//	}
//	defer chk.Close()
//	for tok := range generate(chk.Context()) {
//		if chk.Cancelled() {
//			break
//		}
//		send(tok)
//	}
//
// Any node stops it with reg.Cancel(ctx, streamID). CancelAndWait also
// confirms that the run ended, and CancelGroup stops every run of a group.
// WithPendingCancel keeps a Stop that arrives before Start, WithTakeover
// replaces a running stream, and WithReason tells the run why it stopped.
package streamcancel
