// Command demo shows a cancel crossing nodes: node-a streams tokens, node-b
// cancels the stream through Redis, and node-a's loop stops.
//
// By default it runs against an embedded miniredis, so it needs nothing but
// Go:
//
//	go run ./examples/demo
//
// To use a real Redis, pass its address with -redis or set REDIS_ADDR; the
// flag wins. Every run uses its own key prefix, so the demo never touches
// other data on a shared Redis. Run with -h for the other flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"time"
)

// sentence is the text that node-a streams, one word per token.
const sentence = "A stop button has to work on every node of a streaming service. " +
	"This stream runs on node-a, the stop request lands on node-b, " +
	"and Redis carries the cancel across within a few milliseconds, " +
	"long before the last of these words would have been sent."

// config holds the demo's settings. The zero value of RedisAddr selects the
// embedded miniredis.
type config struct {
	// RedisAddr is the host:port of a Redis server. Empty starts an
	// embedded miniredis on a loopback port.
	RedisAddr string

	// CancelAfterTokens is the number of tokens node-a sends before
	// node-b cancels. It is used when CancelDelay is zero.
	CancelAfterTokens int

	// CancelDelay, when positive, makes node-b cancel this long after the
	// stream started, in place of CancelAfterTokens.
	CancelDelay time.Duration

	// TokenInterval is the time between two tokens.
	TokenInterval time.Duration

	// PollInterval is the registries' WithPollInterval.
	PollInterval time.Duration

	// StopTimeout is the maximum time from the Cancel call until node-a's
	// loop has stopped. The demo fails when it is exceeded.
	StopTimeout time.Duration

	// KeyPrefix is the registries' key prefix. Empty picks a random
	// prefix for this run.
	KeyPrefix string

	// Logger receives the errors that the registries handle by
	// themselves, such as a failed lease refresh. Nil discards them.
	Logger *slog.Logger
}

func defaultConfig() config {
	return config{
		CancelAfterTokens: 8,
		TokenInterval:     20 * time.Millisecond,
		PollInterval:      100 * time.Millisecond,
		StopTimeout:       2 * time.Second,
	}
}

// tokens returns the words that node-a streams.
func tokens() []string {
	return strings.Fields(sentence)
}

// validate checks the settings that the registries do not check.
func (c config) validate() error {
	n := len(tokens())
	switch {
	case c.CancelDelay < 0:
		return fmt.Errorf("invalid -delay %v: it must be 0 (cancel after -tokens) or positive", c.CancelDelay)
	case c.CancelDelay == 0 && (c.CancelAfterTokens < 1 || c.CancelAfterTokens >= n):
		return fmt.Errorf("invalid -tokens %d: it must be 1 to %d, because the stream has %d tokens and must still be running when node-b cancels", c.CancelAfterTokens, n-1, n)
	case c.TokenInterval <= 0:
		return fmt.Errorf("invalid -interval %v: it must be positive", c.TokenInterval)
	case c.StopTimeout <= 0:
		return fmt.Errorf("invalid -timeout %v: it must be positive", c.StopTimeout)
	}
	return nil
}

// parseConfig reads the flags in args. getenv supplies REDIS_ADDR, which
// is used when -redis is not given.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	cfg := defaultConfig()

	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.RedisAddr, "redis", "", "`address` (host:port) of a Redis server to use instead of the embedded miniredis; when absent, REDIS_ADDR sets it")
	fs.IntVar(&cfg.CancelAfterTokens, "tokens", cfg.CancelAfterTokens, "number of tokens node-a sends before node-b cancels")
	fs.DurationVar(&cfg.CancelDelay, "delay", 0, "time after the stream starts at which node-b cancels, such as 150ms; 0 cancels after -tokens instead")
	fs.DurationVar(&cfg.TokenInterval, "interval", cfg.TokenInterval, "time between two tokens")
	fs.DurationVar(&cfg.PollInterval, "poll", cfg.PollInterval, "poll interval of the registries (WithPollInterval), at least 10ms")
	fs.DurationVar(&cfg.StopTimeout, "timeout", cfg.StopTimeout, "maximum time from node-b's Cancel until node-a's loop stops; the demo fails when it is exceeded")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q; the demo takes only flags, see -h", fs.Arg(0))
	}

	if cfg.RedisAddr == "" {
		cfg.RedisAddr = getenv("REDIS_ADDR")
	}
	return cfg, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}

	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err = run(ctx, cfg, os.Stdout)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil && interrupted {
		fmt.Fprintln(os.Stderr, "demo interrupted")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}
