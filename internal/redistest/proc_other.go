//go:build !linux

package redistest

import "syscall"

// sysProcAttr returns nil because only Linux can kill a child process when
// its parent exits. A test binary that crashes before its cleanup runs can
// leave a redis-server running on these systems.
func sysProcAttr() *syscall.SysProcAttr {
	return nil
}
