package redistest

import "syscall"

// sysProcAttr makes the kernel kill redis-server when the thread that
// started it exits, so a test binary that crashes or is killed before its
// cleanup runs leaves no server behind.
//
// NOTE: The Go runtime ends a thread when a goroutine that called
// runtime.LockOSThread exits without unlocking it. If such a goroutine ran
// on the thread that started a server, the server dies at that moment.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
