package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds each run of the demo in the tests.
const testTimeout = 30 * time.Second

var (
	deliveredPattern = regexp.MustCompile(`tokens delivered:\s+(\d+) of (\d+)`)
	nodeCountPattern = regexp.MustCompile(`(?m)^\s+(node-[ab])\s+(\d+): `)
	totalPattern     = regexp.MustCompile(`(?m)^\s+total\s+(\d+)$`)
)

// runDemo runs the demo with cfg and returns its output.
func runDemo(t *testing.T, cfg config) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	var out bytes.Buffer
	err := run(ctx, cfg, &out)
	t.Logf("demo output:\n%s", out.String())
	return out.String(), err
}

// checkCanceledRun asserts that out reports a stream that node-b canceled
// before its end, with the cause matching ErrCanceled.
func checkCanceledRun(t *testing.T, out string, cancelAfter int) {
	t.Helper()

	m := deliveredPattern.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("output has no %q line", "tokens delivered")
	}
	delivered, _ := strconv.Atoi(m[1])
	total, _ := strconv.Atoi(m[2])
	if total != len(tokens()) {
		t.Errorf("total tokens = %d, want %d", total, len(tokens()))
	}
	if delivered >= total {
		t.Errorf("delivered %d of %d tokens, want fewer than all", delivered, total)
	}
	if cancelAfter > 0 && delivered < cancelAfter {
		t.Errorf("delivered %d tokens, want at least %d, the count after which node-b cancels", delivered, cancelAfter)
	}

	if !strings.Contains(out, `found=true node="node-a"`) {
		t.Errorf("output does not report that node-b's Cancel found the run on node-a")
	}
	if !strings.Contains(out, "[stopped]") {
		t.Errorf("output does not mark where the stream stopped")
	}
	if !strings.Contains(out, "matches ErrCanceled: true") {
		t.Errorf("output does not report a cause matching ErrCanceled")
	}
	if strings.Contains(out, "(not measured)") {
		t.Errorf("output has an unmeasured cancel latency")
	}
}

// checkCommandCounts asserts that both nodes sent commands and that the
// total is their sum, and returns the total.
func checkCommandCounts(t *testing.T, out string) int {
	t.Helper()

	sum := 0
	nodes := nodeCountPattern.FindAllStringSubmatch(out, -1)
	if len(nodes) != 2 {
		t.Fatalf("found %d per-node command counts, want 2", len(nodes))
	}
	for _, m := range nodes {
		n, _ := strconv.Atoi(m[2])
		if n == 0 {
			t.Errorf("%s sent no commands, want at least one (Start on node-a, Cancel on node-b)", m[1])
		}
		sum += n
	}

	m := totalPattern.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("output has no total command count")
	}
	total, _ := strconv.Atoi(m[1])
	if total != sum {
		t.Errorf("total command count = %d, want %d, the sum of the nodes", total, sum)
	}
	return total
}

func TestRunEmbeddedMiniredis(t *testing.T) {
	cfg := defaultConfig()
	out, err := runDemo(t, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	checkCanceledRun(t, out, cfg.CancelAfterTokens)
	checkCommandCounts(t, out)
	if !strings.Contains(out, "embedded miniredis") {
		t.Errorf("output does not say that it used the embedded miniredis")
	}
	if !strings.Contains(out, "Key prefix: streamcancel-demo-") {
		t.Errorf("output does not show a random key prefix")
	}
}

func TestRunGivenMiniredisLeavesNoKeys(t *testing.T) {
	server, err := miniredis.Run()
	if err != nil {
		t.Fatalf("starting miniredis: %v", err)
	}
	defer server.Close()

	cfg := defaultConfig()
	cfg.RedisAddr = server.Addr()
	cfg.KeyPrefix = "demo-test-" + randomHex(4)
	out, err := runDemo(t, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	checkCanceledRun(t, out, cfg.CancelAfterTokens)
	total := checkCommandCounts(t, out)
	if !strings.Contains(out, "Key prefix: "+cfg.KeyPrefix+",") {
		t.Errorf("output does not show the configured key prefix %q", cfg.KeyPrefix)
	}
	if strings.Contains(out, "miniredis counted") {
		t.Errorf("output reports a miniredis count for a server it did not start")
	}

	// The server also counts HELLO, SUBSCRIBE, PING and the commands the
	// scripts run, which the hook does not see.
	if got := server.CommandCount(); got <= total {
		t.Errorf("miniredis counted %d commands, want more than the %d the hook counted", got, total)
	}
	if keys := withoutCallRecord(t, server.Keys(), server.TTL); len(keys) != 0 {
		t.Errorf("keys left in Redis after the demo: %q, want none", keys)
	}
}

func TestRunCancelAfterDelay(t *testing.T) {
	cfg := defaultConfig()
	cfg.CancelDelay = 100 * time.Millisecond
	out, err := runDemo(t, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	checkCanceledRun(t, out, 0)
	if !strings.Contains(out, "cancels it 100ms after the start") {
		t.Errorf("output does not describe the delay trigger")
	}
}

func TestRunStreamEndsBeforeCancel(t *testing.T) {
	cfg := defaultConfig()
	cfg.TokenInterval = time.Millisecond
	cfg.CancelDelay = 5 * time.Second
	start := time.Now()
	_, err := runDemo(t, cfg)
	if err == nil {
		t.Fatal("run succeeded, want an error because the stream ended before the cancel")
	}
	if !strings.Contains(err.Error(), "before node-b canceled") {
		t.Errorf("error = %q, want it to say that the stream ended before node-b canceled", err)
	}
	if elapsed := time.Since(start); elapsed >= cfg.CancelDelay {
		t.Errorf("run took %v, want it to return when the stream ended, before the %v delay", elapsed, cfg.CancelDelay)
	}
}

func TestRunUnreachableRedis(t *testing.T) {
	// A loopback port that was just released refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()

	cfg := defaultConfig()
	cfg.RedisAddr = addr
	start := time.Now()
	out, err := runDemo(t, cfg)
	if err == nil {
		t.Fatal("run succeeded, want an error for an unreachable Redis")
	}
	if !strings.Contains(err.Error(), "Redis at "+addr+" is unreachable") {
		t.Errorf("error = %q, want it to name the unreachable address %s", err, addr)
	}
	if elapsed := time.Since(start); elapsed > probeTimeout+time.Second {
		t.Errorf("run took %v, want at most about the %v probe timeout", elapsed, probeTimeout)
	}
	if out != "" {
		t.Errorf("output = %q, want none for an unreachable Redis", out)
	}
}

func TestRunRealRedis(t *testing.T) {
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	if err := pingRedis(addr); err != nil {
		if os.Getenv("STREAMCANCEL_REQUIRE_REDIS") == "1" {
			t.Fatalf("Redis at %s does not reply to PING and STREAMCANCEL_REQUIRE_REDIS=1: %v", addr, err)
		}
		t.Skipf("skipping: Redis at %s does not reply to PING (%v); set REDIS_ADDR to test another server, or STREAMCANCEL_REQUIRE_REDIS=1 to fail instead", addr, err)
	}

	cfg := defaultConfig()
	cfg.RedisAddr = addr
	cfg.KeyPrefix = "streamcancel-demo-test-" + randomHex(8)
	out, err := runDemo(t, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	checkCanceledRun(t, out, cfg.CancelAfterTokens)
	checkCommandCounts(t, out)
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	pttl := func(key string) time.Duration { return client.PTTL(context.Background(), key).Val() }
	if keys := withoutCallRecord(t, scanKeys(t, addr, cfg.KeyPrefix+"*"), pttl); len(keys) != 0 {
		t.Errorf("keys left under %q after the demo: %q, want none", cfg.KeyPrefix, keys)
	}
}

// pingRedis sends a PING to the Redis at addr, waits at most 1s for the
// reply and returns the error.
func pingRedis(addr string) error {
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return client.Ping(ctx).Err()
}

// scanKeys returns the keys of the Redis at addr that match pattern.
// withoutCallRecord returns keys without the record of node-b's cancel
// call, which the library keeps for the call's time bound plus a second,
// and checks that such a record expires within 6s.
func withoutCallRecord(t *testing.T, keys []string, ttl func(string) time.Duration) []string {
	t.Helper()
	var left []string
	for _, key := range keys {
		if !strings.HasSuffix(key, ":calls") {
			left = append(left, key)
			continue
		}
		if d := ttl(key); d <= 0 || d > 6*time.Second {
			t.Errorf("TTL of %s: got %v, want (0, 6s]", key, d)
		}
	}
	return left
}

func scanKeys(t *testing.T, addr, pattern string) []string {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var keys []string
	iter := client.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("scanning keys %q: %v", pattern, err)
	}
	return keys
}

func TestConfigValidate(t *testing.T) {
	n := len(tokens())
	tests := []struct {
		name    string
		change  func(*config)
		wantErr string // empty for a valid config
	}{
		{"default", func(c *config) {}, ""},
		{"last token", func(c *config) { c.CancelAfterTokens = n - 1 }, ""},
		{"zero tokens", func(c *config) { c.CancelAfterTokens = 0 }, "invalid -tokens 0"},
		{"all tokens", func(c *config) { c.CancelAfterTokens = n }, "invalid -tokens " + strconv.Itoa(n)},
		{"tokens ignored with delay", func(c *config) { c.CancelAfterTokens = 0; c.CancelDelay = time.Millisecond }, ""},
		{"negative delay", func(c *config) { c.CancelDelay = -time.Second }, "invalid -delay -1s"},
		{"zero interval", func(c *config) { c.TokenInterval = 0 }, "invalid -interval 0s"},
		{"zero timeout", func(c *config) { c.StopTimeout = 0 }, "invalid -timeout 0s"},
	}
	for _, tt := range tests {
		tt := tt
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			tt.change(&cfg)
			err := cfg.validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("validate() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("validate() = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("validate() = %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestRunRejectsInvalidPollInterval(t *testing.T) {
	cfg := defaultConfig()
	cfg.PollInterval = time.Millisecond
	_, err := runDemo(t, cfg)
	if err == nil {
		t.Fatal("run succeeded, want an error for a 1ms poll interval")
	}
	if !strings.Contains(err.Error(), "WithPollInterval(1ms)") {
		t.Errorf("error = %q, want it to name WithPollInterval(1ms)", err)
	}
}

func TestParseConfigRedisAddr(t *testing.T) {
	env := func(addr string) func(string) string {
		return func(key string) string {
			if key == "REDIS_ADDR" {
				return addr
			}
			return ""
		}
	}
	tests := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"neither", nil, "", ""},
		{"env only", nil, "127.0.0.1:7000", "127.0.0.1:7000"},
		{"flag only", []string{"-redis", "127.0.0.1:7001"}, "", "127.0.0.1:7001"},
		{"flag wins", []string{"-redis", "127.0.0.1:7001"}, "127.0.0.1:7000", "127.0.0.1:7001"},
	}
	for _, tt := range tests {
		tt := tt
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("parseConfig(%q): %v", tt.args, err)
			}
			if cfg.RedisAddr != tt.want {
				t.Errorf("RedisAddr = %q, want %q", cfg.RedisAddr, tt.want)
			}
		})
	}
}

func TestParseConfigFlags(t *testing.T) {
	args := []string{"-tokens", "3", "-delay", "150ms", "-interval", "5ms", "-poll", "50ms", "-timeout", "1s"}
	cfg, err := parseConfig(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig(%q): %v", args, err)
	}

	want := defaultConfig()
	want.CancelAfterTokens = 3
	want.CancelDelay = 150 * time.Millisecond
	want.TokenInterval = 5 * time.Millisecond
	want.PollInterval = 50 * time.Millisecond
	want.StopTimeout = time.Second
	if cfg != want {
		t.Errorf("parseConfig(%q) = %+v, want %+v", args, cfg, want)
	}
}

func TestParseConfigRejectsArguments(t *testing.T) {
	_, err := parseConfig([]string{"extra"}, func(string) string { return "" }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `unexpected argument "extra"`) {
		t.Errorf("parseConfig with an argument = %v, want an unexpected argument error", err)
	}
}

func TestParseConfigHelp(t *testing.T) {
	_, err := parseConfig([]string{"-h"}, func(string) string { return "" }, io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("parseConfig(-h) = %v, want flag.ErrHelp", err)
	}
}

func TestCommandCounterCounts(t *testing.T) {
	server, err := miniredis.Run()
	if err != nil {
		t.Fatalf("starting miniredis: %v", err)
	}
	defer server.Close()

	client := redis.NewClient(&redis.Options{Addr: server.Addr()})
	defer client.Close()
	counter := newCommandCounter()
	client.AddHook(counter)

	ctx := context.Background()
	if err := client.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	_, err = client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Get(ctx, "k")
		pipe.Get(ctx, "k")
		return nil
	})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	script := redis.NewScript("return 1")
	if err := script.Run(ctx, client, nil).Err(); err != nil {
		t.Fatalf("script: %v", err)
	}

	s := counter.snapshot()
	want := []commandCount{{"GET", 2}, {"EVAL", 1}, {"EVALSHA", 1}, {"SET", 1}}
	if len(s.commands) != len(want) {
		t.Fatalf("commands = %+v, want %+v", s.commands, want)
	}
	for i := range want {
		if s.commands[i] != want[i] {
			t.Errorf("commands[%d] = %+v, want %+v", i, s.commands[i], want[i])
		}
	}
	if s.total != 5 {
		t.Errorf("total = %d, want 5", s.total)
	}
	if s.noScript != 1 {
		t.Errorf("NOSCRIPT replies = %d, want 1 for the first EVALSHA", s.noScript)
	}
	if s.dials != 1 {
		t.Errorf("dials = %d, want 1, because the client reuses its connection", s.dials)
	}
	if got, want := s.String(), "GET 2, EVAL 1, EVALSHA 1 (1 NOSCRIPT), SET 1; connections dialed: 1"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
