package main

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// commandCounter is a go-redis hook that counts the commands a client
// processes, by command name, and the connections it dials.
//
// It counts every command that goes through Process or a pipeline,
// including one that failed before it reached Redis, such as on an
// expired context. It
// misses the commands go-redis sends on its own when it sets up a
// connection (HELLO, AUTH, SELECT), and those sent on a Pub/Sub
// connection (SUBSCRIBE, PING), because go-redis v9.0.0 writes them
// without calling the command hooks. A command that go-redis retries after
// a network error is counted once.
type commandCounter struct {
	mu       sync.Mutex
	commands map[string]int
	noScript int
	dials    int
}

func newCommandCounter() *commandCounter {
	return &commandCounter{commands: make(map[string]int)}
}

// DialHook counts each connection that was dialed successfully.
func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err == nil {
			c.mu.Lock()
			c.dials++
			c.mu.Unlock()
		}
		return conn, err
	}
}

// ProcessHook counts a single command.
func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		c.add(cmd, err)
		return err
	}
}

// ProcessPipelineHook counts each command of a pipeline.
func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			c.add(cmd, cmd.Err())
		}
		return err
	}
}

// add counts cmd, which failed with err or succeeded when err is nil.
// Within ProcessHook the error is only in the return value, because
// go-redis stores it in the command after the hooks return.
func (c *commandCounter) add(cmd redis.Cmder, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()

	c.commands[strings.ToUpper(cmd.Name())]++
	if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
		c.noScript++
	}
}

// commandCount is the count of one command name.
type commandCount struct {
	name  string
	count int
}

// countSnapshot is a copy of a counter's totals.
type countSnapshot struct {
	total    int
	commands []commandCount // sorted by count, highest first, then by name
	noScript int
	dials    int
}

func (c *commandCounter) snapshot() countSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()

	s := countSnapshot{noScript: c.noScript, dials: c.dials}
	for name, n := range c.commands {
		s.total += n
		s.commands = append(s.commands, commandCount{name: name, count: n})
	}
	sort.Slice(s.commands, func(i, j int) bool {
		if s.commands[i].count != s.commands[j].count {
			return s.commands[i].count > s.commands[j].count
		}
		return s.commands[i].name < s.commands[j].name
	})
	return s
}

// String formats the snapshot as
// "EVALSHA 3 (1 NOSCRIPT), EVAL 1; connections dialed: 2".
func (s countSnapshot) String() string {
	parts := make([]string, 0, len(s.commands))
	for _, cc := range s.commands {
		part := fmt.Sprintf("%s %d", cc.name, cc.count)
		if cc.name == "EVALSHA" && s.noScript > 0 {
			part += fmt.Sprintf(" (%d NOSCRIPT)", s.noScript)
		}
		parts = append(parts, part)
	}
	if len(parts) == 0 {
		parts = append(parts, "none")
	}
	return fmt.Sprintf("%s; connections dialed: %d", strings.Join(parts, ", "), s.dials)
}
