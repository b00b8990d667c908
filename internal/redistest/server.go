package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// readyTimeout bounds the wait for a started redis-server to reply to PING.
	readyTimeout = 5 * time.Second

	// stopTimeout bounds the wait for redis-server to exit after SIGTERM,
	// after which it gets SIGKILL.
	stopTimeout = 5 * time.Second

	// killTimeout bounds the wait for redis-server to exit after SIGKILL.
	killTimeout = 10 * time.Second

	// startAttempts is how many free ports StartServer tries when another
	// process takes the chosen port before redis-server binds it.
	startAttempts = 5

	// logTailLines is how many lines of the server log failure messages show.
	logTailLines = 20
)

// reservedArgs are the redis-server options that StartServer sets itself.
// Overriding them would break Addr, Restart or the loopback-only rule.
var reservedArgs = []string{
	"--port", "--bind", "--dir", "--daemonize", "--logfile",
	"--unixsocket", "--tls-port", "--include",
}

// errAddrInUse means that redis-server exited because its port was taken.
var errAddrInUse = errors.New("the port is already in use")

// Server is a redis-server process that belongs to one test. It listens on
// 127.0.0.1 only, saves no RDB or AOF file, and keeps its port across Stop,
// Kill and Restart, so clients configured with Addr reach it again after a
// restart.
//
// The methods are safe for concurrent use. Stop, Kill and Restart report
// failures with t.Fatalf on the test that called StartServer, so they must
// be called from the goroutine running that test.
type Server struct {
	t      testing.TB
	binary string
	args   []string
	dir    string
	log    string
	conf   string // Sentinel's configuration file; empty for a plain server
	port   int
	addr   string

	mu      sync.Mutex
	proc    *process // nil while stopped
	starts  int
	cleaned bool
}

// process is one run of redis-server.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait has returned
	err    error         // the cmd.Wait result, set before exited is closed
}

// StartServer starts a redis-server on a free port of 127.0.0.1 and waits
// until it replies to PING. args are extra redis-server options, such as
// "--maxmemory", "1mb". Options that StartServer sets itself (port, bind,
// dir, daemonize, logfile, unixsocket, tls-port, include) are rejected.
//
// The server saves no RDB or AOF file, and its working directory and log
// are in t.TempDir(). t.Cleanup kills it and waits for it to exit.
//
// StartServer skips the test when redis-server is not on PATH, or fails it
// when STREAMCANCEL_REQUIRE_REDIS is set. It fails the test, showing the
// end of the server log, when the server does not start and reply to PING
// within 5 seconds.
func StartServer(t testing.TB, args ...string) *Server {
	t.Helper()
	return startServer(t, false, args)
}

// startServer is StartServer. With sentinel set it starts redis-server in
// Sentinel mode, with a configuration file of its own that Sentinel
// rewrites.
func startServer(t testing.TB, sentinel bool, args []string) *Server {
	t.Helper()

	for _, arg := range args {
		for _, reserved := range reservedArgs {
			if arg == reserved {
				t.Fatalf("redistest: StartServer sets %s itself, so it must not be passed in args", arg)
				return nil
			}
		}
	}

	binary, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(t, "redistest: redis-server was not found on PATH: %v. "+
			"Install it, for example with \"apt-get install redis-server\" on Debian.", err)
		return nil
	}

	dir := t.TempDir()
	s := &Server{
		t:      t,
		binary: binary,
		args:   args,
		dir:    dir,
		log:    filepath.Join(dir, "redis.log"),
	}
	if sentinel {
		s.conf = filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(s.conf, nil, 0o600); err != nil {
			t.Fatalf("redistest: failed to create the Sentinel configuration file: %v", err)
			return nil
		}
	}
	t.Cleanup(s.cleanup)

	for attempt := 1; ; attempt++ {
		port, err := reservePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
			return nil
		}

		s.mu.Lock()
		s.port = port
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err = s.startLocked()
		s.mu.Unlock()

		if err == nil {
			return s
		}

		// cleanup must not release a port that another Server may
		// reserve next.
		s.mu.Lock()
		s.port = 0
		s.mu.Unlock()
		releasePort(port)
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			t.Fatalf("redistest: failed to start redis-server (attempt %d of %d): %v", attempt, startAttempts, err)
			return nil
		}
	}
}

// Addr returns the server's address, "127.0.0.1:" followed by its port. The
// address stays the same across Stop, Kill and Restart.
func (s *Server) Addr() string {
	return s.addr
}

// Client returns a new client for the server with go-redis default options,
// closed in t.Cleanup. t may be the test that started the server or one of
// its subtests.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()

	client := redis.NewClient(&redis.Options{Addr: s.addr})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// Stop shuts the server down with SIGTERM and waits for it to exit. After
// 5 seconds it sends SIGKILL. Clients get "connection refused" until
// Restart. Stop does nothing when the server is already stopped.
func (s *Server) Stop() {
	s.t.Helper()

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(syscall.SIGTERM); err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
}

// Kill ends the server with SIGKILL, as in a crash, and waits for it to
// exit. Kill does nothing when the server is already stopped.
func (s *Server) Kill() {
	s.t.Helper()

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(syscall.SIGKILL); err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
}

// Restart stops the server as Stop does, if it is running, and starts it
// again on the same port with no keys. It returns once the new server
// replies to PING. If another process has taken the port in the meantime,
// Restart fails the test.
func (s *Server) Restart() {
	s.t.Helper()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cleaned {
		s.t.Fatalf("redistest: Restart called on the server at %s after its test finished", s.addr)
		return
	}
	if err := s.stopLocked(syscall.SIGTERM); err != nil {
		s.t.Fatalf("redistest: %v", err)
		return
	}
	err := s.startLocked()
	if errors.Is(err, errAddrInUse) {
		s.t.Fatalf("redistest: failed to restart redis-server on %s because another process took the port while the server was stopped: %v", s.addr, err)
		return
	}
	if err != nil {
		s.t.Fatalf("redistest: failed to restart redis-server on %s: %v", s.addr, err)
	}
}

// cleanup kills the server for good and frees its port for other servers.
func (s *Server) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.cleaned = true
	if s.port == 0 {
		return
	}
	if err := s.stopLocked(syscall.SIGKILL); err != nil {
		s.t.Errorf("redistest: %v", err)
		// The process may still hold the port, so it stays reserved.
		return
	}
	if s.t.Failed() {
		s.t.Logf("redistest: last lines of the log of redis-server on %s:\n%s", s.addr, s.logTail(0))
	}
	releasePort(s.port)
}

// startLocked starts redis-server on s.port and waits until it replies
// to PING. Each start gets an empty working directory, so no start can load
// data that an earlier one wrote. The caller holds s.mu.
func (s *Server) startLocked() error {
	s.starts++
	dataDir := filepath.Join(s.dir, fmt.Sprintf("data-%d", s.starts))
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		return fmt.Errorf("failed to create the data directory: %w", err)
	}

	logFile, err := os.OpenFile(s.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("failed to open the server log: %w", err)
	}
	// The child process gets its own copy of the descriptor, so the file
	// can be closed here whether or not the start succeeds.
	defer logFile.Close()

	logStart, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("failed to find the end of the server log: %w", err)
	}
	fmt.Fprintf(logFile, "=== redistest: start %d of redis-server on %s\n", s.starts, s.addr)

	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "no",
		"--dir", dataDir,
		"--logfile", "",
	}
	args = append(args, s.args...)
	if s.conf != "" {
		args = append([]string{s.conf, "--sentinel"}, args...)
	}

	cmd := exec.Command(s.binary, args...)
	// An *os.File is passed to the child as is, so exec starts no goroutine
	// to copy the output.
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to run %s: %w", s.binary, err)
	}

	proc := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		proc.err = cmd.Wait()
		close(proc.exited)
	}()
	s.proc = proc

	err = waitReady(s.addr, proc)
	if err == nil {
		return nil
	}

	if killErr := s.stopLocked(syscall.SIGKILL); killErr != nil {
		err = errors.Join(err, killErr)
	}
	if strings.Contains(s.logSince(logStart), "Address already in use") {
		return fmt.Errorf("redis-server could not listen on %s: %w", s.addr, errAddrInUse)
	}
	return fmt.Errorf("%w\nlast lines of the server log:\n%s", err, s.logTail(logStart))
}

// waitReady waits until the server at addr replies to PING or proc exits.
func waitReady(addr string, proc *process) error {
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for {
		select {
		case <-proc.exited:
			return fmt.Errorf("redis-server exited before it replied to PING: %v", proc.err)
		default:
		}

		lastErr = ping(addr)
		if lastErr == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not reply to PING within %v: %w", addr, readyTimeout, lastErr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping sends PING on a new connection and checks for the PONG reply. It
// uses no go-redis client, so it leaves no pool or goroutine behind.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()

	if err := conn.SetDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("unexpected reply to PING: %q", strings.TrimSpace(line))
	}
	return nil
}

// stopLocked sends sig to the running server and waits for it to exit.
// When sig is SIGTERM and the server is still running after stopTimeout,
// it sends SIGKILL. The caller holds s.mu.
func (s *Server) stopLocked(sig syscall.Signal) error {
	proc := s.proc
	if proc == nil {
		return nil
	}

	if sig != syscall.SIGKILL {
		_ = proc.cmd.Process.Signal(sig)
		select {
		case <-proc.exited:
			s.proc = nil
			return nil
		case <-time.After(stopTimeout):
		}
	}

	// Kill returns an error only when the process has already exited,
	// which the wait below observes.
	_ = proc.cmd.Process.Kill()
	select {
	case <-proc.exited:
		s.proc = nil
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("redis-server (pid %d) on %s did not exit within %v of SIGKILL",
			proc.cmd.Process.Pid, s.addr, killTimeout)
	}
}

// logSince returns the server log from byte offset on, or an empty string
// when the log cannot be read.
func (s *Server) logSince(offset int64) string {
	data, err := os.ReadFile(s.log)
	if err != nil || offset > int64(len(data)) {
		return ""
	}
	return string(data[offset:])
}

// logTail returns the last logTailLines lines of the server log from byte
// offset on.
func (s *Server) logTail(offset int64) string {
	data, err := os.ReadFile(s.log)
	if err != nil {
		return fmt.Sprintf("(failed to read %s: %v)", s.log, err)
	}
	if offset <= int64(len(data)) {
		data = data[offset:]
	}

	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// ports contains the ports of the Servers in this process that have not
// been cleaned up, stopped ones included. reservePort skips them, so a
// stopped Server gets its port back on Restart unless a process outside
// this test binary takes it.
var ports = struct {
	sync.Mutex
	inUse map[int]bool
}{inUse: make(map[int]bool)}

// reservePort returns a free loopback port that no other Server in this
// process holds and records it as held.
func reservePort() (int, error) {
	ports.Lock()
	defer ports.Unlock()

	for i := 0; i < 100; i++ {
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("failed to find a free port on 127.0.0.1: %w", err)
		}
		port := listener.Addr().(*net.TCPAddr).Port
		_ = listener.Close()

		if !ports.inUse[port] {
			ports.inUse[port] = true
			return port, nil
		}
	}
	return 0, errors.New("failed to find a free port on 127.0.0.1 that no other test server in this process uses, after 100 tries")
}

// releasePort lets reservePort return port again.
func releasePort(port int) {
	ports.Lock()
	defer ports.Unlock()
	delete(ports.inUse, port)
}

// running reports whether the server process is running.
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}
