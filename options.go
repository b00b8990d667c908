package streamcancel

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Defaults applied by NewRegistry when an option is not given.
const (
	defaultCheckEvery   = 10
	defaultTTL          = 30 * time.Second
	defaultPollInterval = time.Second
	defaultKeyPrefix    = "streamcancel"
)

// Limits checked by NewRegistry.
const (
	minTTL          = 100 * time.Millisecond
	minPollInterval = 10 * time.Millisecond
	minPendingTTL   = 10 * time.Millisecond
	maxPendingTTL   = time.Hour
	maxKeyPrefixLen = 128
	maxNodeIDLen    = 128
)

// Timing that follows from the options. Each bound keeps a call on the
// caller's path short while Redis is slow or down.
const (
	// refreshDivisor sets the lease refresh interval to TTL/refreshDivisor,
	// so a marker survives two missed refreshes before it expires.
	refreshDivisor = 3

	// startTimeout bounds the Redis part of Start. When it passes, Start
	// returns a working Checker and the registry registers the run later.
	startTimeout = 500 * time.Millisecond

	// releaseTimeout bounds the Redis part of Checker.Close.
	releaseTimeout = 500 * time.Millisecond

	// Bounds of the wait between two tries to delete the marker of an
	// ended run after Checker.Close failed to.
	minReleaseRetryDelay = 50 * time.Millisecond
	maxReleaseRetryDelay = 2 * time.Second

	// Bounds of the wait between two tries of a call whose slot is being
	// migrated on Redis Cluster.
	minUnstableDelay = 10 * time.Millisecond
	maxUnstableDelay = 200 * time.Millisecond

	// cancelTimeout caps Cancel and CancelGroup when the caller's context
	// has no deadline.
	cancelTimeout = 5 * time.Second

	// cancelWaitTimeout caps CancelAndWait when the caller's context has no
	// deadline.
	cancelWaitTimeout = 30 * time.Second

	// endedTTL is the minimum lease of the record a run leaves when it
	// ends while a node waits for it, which CancelAndWait reads when a
	// push is lost. The record lasts as long as the longest wait if that
	// is longer, because a waiter's PollInterval has no upper bound.
	endedTTL = time.Minute

	// closeDrainTimeout and closeReleaseTimeout split Registry.Close's
	// one-second budget between waiting for calls in flight and removing
	// the markers.
	closeDrainTimeout   = 500 * time.Millisecond
	closeReleaseTimeout = 300 * time.Millisecond

	// errorLogInterval is the minimum time between two log records of the
	// same error kind. Errors in between are only counted.
	errorLogInterval = 10 * time.Second
)

// An Option configures a Registry. Options are created with the With
// functions; invalid values make NewRegistry return ErrInvalidOption.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is the validated registry configuration.
type config struct {
	checkEvery   int
	ttl          time.Duration
	pollInterval time.Duration
	keyPrefix    string
	nodeID       string
	nodeIDSet    bool
	logger       *slog.Logger
	pendingTTL   time.Duration // 0 when pending cancels are off
	pendingSet   bool
}

// WithCheckEvery sets how many Cancelled calls pass between two requests
// for a background poll of the run's record. Polls requested this way
// happen only while the Pub/Sub push path is down. n must be at least 1.
// The default is 10.
func WithCheckEvery(n int) Option {
	return optionFunc(func(c *config) { c.checkEvery = n })
}

// WithTTL sets the lease of a run's active marker in Redis. The registry
// refreshes the lease every TTL/3 while the run lives, so the TTL bounds
// how long the keys of a crashed node stay behind. d must be at least
// 100ms. The default is 30s.
func WithTTL(d time.Duration) Option {
	return optionFunc(func(c *config) { c.ttl = d })
}

// WithPollInterval sets how often the registry checks for lost Pub/Sub
// pushes. On a *redis.Client it publishes a probe message and waits d/50
// for it. When the probe does not return, or proves nothing as on Redis
// Cluster, it re-reads the cancel records of all its local runs in one
// batched round trip. It bounds the cancel latency when a push
// is lost. d must be at least 10ms. The default is 1s.
func WithPollInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.pollInterval = d })
}

// WithKeyPrefix sets the prefix of every key and channel the registry
// uses. Registries that must see each other's runs need the same prefix.
// The prefix must be 1 to 128 bytes and must not contain '{' or '}',
// because the library places its own Redis Cluster hash tag after it.
// The default is "streamcancel".
func WithKeyPrefix(prefix string) Option {
	return optionFunc(func(c *config) { c.keyPrefix = prefix })
}

// WithNodeID sets the name of this node, stored with each run it starts
// and used to address its cancel channel. It must be 1 to 128 bytes.
// The default is the host name followed by a random suffix.
func WithNodeID(id string) Option {
	return optionFunc(func(c *config) {
		c.nodeID = id
		c.nodeIDSet = true
	})
}

// WithLogger sets the logger for errors the registry handles by itself,
// such as a failed lease refresh. Each kind of error is logged at most
// once every 10 seconds and counted in Stats. A nil logger discards.
// The default discards.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) { c.logger = l })
}

// WithPendingCancel makes a Cancel that finds no active run store a
// pending cancel for ttl, so that the next Start of the same stream ID
// within ttl, on any node, returns a Checker that is already canceled.
// CancelResult.Pending reports that one was stored. Start consumes the
// record, so it stops one run only. ttl must be 10ms to 1h. By default no
// pending cancel is stored.
//
// The option affects the Cancel calls of this registry; every registry
// honours a pending cancel at Start. Use it only when stream IDs are not
// reused for new work within ttl: a Stop that arrives after a run ended
// also leaves a record, and that record stops the next run of the same ID.
func WithPendingCancel(ttl time.Duration) Option {
	return optionFunc(func(c *config) {
		c.pendingTTL = ttl
		c.pendingSet = true
	})
}

// newConfig applies opts over the defaults and validates the result.
func newConfig(opts []Option) (config, error) {
	cfg := config{
		checkEvery:   defaultCheckEvery,
		ttl:          defaultTTL,
		pollInterval: defaultPollInterval,
		keyPrefix:    defaultKeyPrefix,
	}
	for i, opt := range opts {
		if opt == nil {
			return config{}, fmt.Errorf("%w: NewRegistry option %d is a nil Option; pass options made by the With functions", ErrInvalidOption, i+1)
		}
		opt.apply(&cfg)
	}

	if err := cfg.validate(); err != nil {
		return config{}, err
	}

	if cfg.nodeID == "" {
		cfg.nodeID = defaultNodeID()
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return cfg, nil
}

func (c *config) validate() error {
	switch {
	case c.checkEvery < 1:
		return fmt.Errorf("%w: WithCheckEvery(%d): n must be at least 1", ErrInvalidOption, c.checkEvery)
	case c.ttl < minTTL:
		return fmt.Errorf("%w: WithTTL(%v): the TTL must be at least %v", ErrInvalidOption, c.ttl, minTTL)
	case c.pollInterval < minPollInterval:
		return fmt.Errorf("%w: WithPollInterval(%v): the interval must be at least %v", ErrInvalidOption, c.pollInterval, minPollInterval)
	case c.keyPrefix == "" || len(c.keyPrefix) > maxKeyPrefixLen:
		return fmt.Errorf("%w: WithKeyPrefix(%q): the prefix must be 1 to %d bytes", ErrInvalidOption, c.keyPrefix, maxKeyPrefixLen)
	case strings.ContainsAny(c.keyPrefix, "{}"):
		return fmt.Errorf("%w: WithKeyPrefix(%q): the prefix must not contain '{' or '}' because the library sets the hash tag", ErrInvalidOption, c.keyPrefix)
	case c.pendingSet && (c.pendingTTL < minPendingTTL || c.pendingTTL > maxPendingTTL):
		return fmt.Errorf("%w: WithPendingCancel(%v): the TTL must be %s to %s", ErrInvalidOption, c.pendingTTL, shortDuration(minPendingTTL), shortDuration(maxPendingTTL))
	case c.nodeIDSet && (c.nodeID == "" || len(c.nodeID) > maxNodeIDLen):
		return fmt.Errorf("%w: WithNodeID(%q): the node ID must be 1 to %d bytes", ErrInvalidOption, c.nodeID, maxNodeIDLen)
	}
	return nil
}

// refreshInterval is how often the registry extends the leases of its runs.
func (c *config) refreshInterval() time.Duration {
	return c.ttl / refreshDivisor
}

// pingInterval is how long the subscriber waits in silence before it sends
// a PING, and how long it waits for any reply after that before it
// replaces the connection. It follows the poll interval within bounds, so
// that a dead subscriber is found about as fast as the poll covers for it.
func (c *config) pingInterval() time.Duration {
	return min(max(c.pollInterval, 100*time.Millisecond), 5*time.Second)
}

func defaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	if len(host) > maxNodeIDLen-9 {
		host = host[:maxNodeIDLen-9]
	}
	return host + "-" + randomHex(4)
}

// tokenLen is the length of a run token: 16 random bytes as hex.
const tokenLen = 32

// randomHex returns n random bytes as hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand.Read does not fail on supported platforms.
		panic("streamcancel: reading random bytes: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// shortDuration formats d like time.Duration.String without trailing zero
// units: "1h" rather than "1h0m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
