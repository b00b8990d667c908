package streamcancel

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds of the wait between two subscribe attempts.
const (
	minResubscribeDelay = 10 * time.Millisecond
	maxResubscribeDelay = time.Second
)

// errNoPong reports a subscriber connection that stopped replying.
var errNoPong = errors.New("no reply to PING on the Pub/Sub connection")

// subscribe keeps one subscription to the node's cancel channel alive and
// delivers the cancels it receives. It replaces the PubSub, and with it
// the connection, whenever receiving fails or a PING goes unanswered,
// because go-redis's own reconnect does not notice a connection that
// silently stops delivering. Only one PubSub exists at a time.
func (r *Registry) subscribe() {
	defer r.wg.Done()

	delay := minResubscribeDelay
	for r.ctx.Err() == nil {
		ps := r.rdb.Subscribe(r.ctx, r.channel)
		if !r.setPubSub(ps) {
			_ = ps.Close()
			return
		}

		confirmed, err := r.listen(ps)
		r.pushReady.Store(false)
		r.closePubSub()
		if r.ctx.Err() != nil {
			return
		}
		if confirmed {
			delay = minResubscribeDelay
		}
		r.reportError(kindSubscribe, "", err)

		select {
		case <-r.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, maxResubscribeDelay)
	}
}

// listen receives from ps until it fails or the registry closes, and
// reports whether Redis confirmed the subscription before that. It sends
// a PING after each pingInterval of silence and gives up when nothing
// arrives during the next one.
func (r *Registry) listen(ps *redis.PubSub) (subscribed bool, err error) {
	interval := r.cfg.pingInterval()
	awaitingPong := false

	for {
		msg, err := ps.ReceiveTimeout(r.ctx, interval)
		if r.ctx.Err() != nil {
			return subscribed, r.ctx.Err()
		}

		if err != nil {
			if !isTimeout(err) {
				return subscribed, err
			}
			if awaitingPong {
				return subscribed, errNoPong
			}
			if err := ps.Ping(r.ctx); err != nil {
				return subscribed, err
			}
			awaitingPong = true
			continue
		}

		// Any reply proves that the connection delivers.
		awaitingPong = false

		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == r.channel {
				subscribed = true
				r.pushEpoch.Add(1)
				r.pushReady.Store(true)
				r.stats.subscriptions.Add(1)
				r.requestResync()
			}
		case *redis.Pong:
			r.pushReady.Store(subscribed)
		case *redis.Message:
			r.handlePush(m.Payload)
		}
	}
}

// requestResync requests an immediate read of all records from the
// background loop. Pushes sent while the subscriber was away are lost,
// and this pass finds their records.
func (r *Registry) requestResync() {
	select {
	case r.resync <- struct{}{}:
	default:
	}
}

// setPubSub stores ps as the current subscription. It returns false when
// the registry is closing.
func (r *Registry) setPubSub(ps *redis.PubSub) bool {
	r.psMu.Lock()
	defer r.psMu.Unlock()

	if r.ctx.Err() != nil {
		return false
	}
	r.ps = ps
	return true
}

// closePubSub closes the current subscription, which also ends a receive
// that is blocked on it.
func (r *Registry) closePubSub() {
	r.psMu.Lock()
	defer r.psMu.Unlock()

	if r.ps != nil {
		_ = r.ps.Close()
		r.ps = nil
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handlePush applies a message from this node's channel. The scripts and
// probes send four kinds, each a word, a space, a token, a space and a
// value:
//
//   - "cancel TOKEN REASON": a cancel of the run, REASON may be empty.
//   - "takeover TOKEN NODE": a run on NODE took over the run.
//   - "ended TOKEN MICROSECONDS": a canceled run ended; CancelAndWait
//     calls on this node wait for it.
//   - "probe ID NUMBER": a probe of the registry with probe ID ID (see
//     probe), which Stats.PushesReceived does not count.
//
// Other messages, and tokens of runs that are not on this node, are
// ignored.
func (r *Registry) handlePush(payload string) {
	kind, rest, _ := strings.Cut(payload, " ")
	token, value, _ := strings.Cut(rest, " ")
	if kind == "probe" {
		r.handleProbe(token, value)
		return
	}
	r.stats.pushesReceived.Add(1)

	switch kind {
	case "cancel":
		r.deliver(token, &CancelError{Reason: value})
	case "takeover":
		r.deliver(token, &CancelError{TakenOverBy: value})
	case "ended":
		us, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return
		}
		r.notifyEnded(token, time.Duration(us)*time.Microsecond)
	}
}
