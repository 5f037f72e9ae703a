package testenv

import "syscall"

// sysProcAttr makes the kernel kill started components when the test binary
// dies (a panic or -timeout), so none outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
