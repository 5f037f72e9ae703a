package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// StopTimeout is how long a stopped process gets between SIGTERM and SIGKILL.
const StopTimeout = 10 * time.Second

// ReadyTimeout bounds the wait for a started component to answer. It is
// generous because the test machines are shared and noisy.
const ReadyTimeout = 60 * time.Second

// pollInterval paces readiness probes of external processes.
const pollInterval = 25 * time.Millisecond

// process is a started subprocess whose output goes to a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once the process has exited
	err  error         // cmd.Wait's result, set before done is closed
}

// start runs bin with args, stdout and stderr appended to logPath, and stops
// it in t.Cleanup. Environment variables with the prefixes in dropEnv are
// removed so that the caller's environment cannot override the generated
// configuration.
func start(t testing.TB, logPath string, dropEnv []string, bin string, args ...string) (*process, error) {
	t.Helper()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log for %s: %w", bin, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = environ(dropEnv)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{name: bin, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { // owned by p: ends when the process exits, which p.stop forces
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p, nil
}

// environ returns the current environment without the variables whose names
// start with one of prefixes.
func environ(prefixes []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !hasAnyPrefix(name, prefixes) {
			env = append(env, kv)
		}
	}
	return env
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// stop ends the process: SIGTERM, then SIGKILL after StopTimeout. It returns
// once the process has exited and is safe to call more than once.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	// Errors mean the process already exited; p.done tells.
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(StopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady polls probe until it succeeds, the process exits or ReadyTimeout
// passes. Polling is the only way to learn when another program is ready.
func (p *process) waitReady(probe func() error) error {
	deadline := time.NewTimer(ReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := probe()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v); log %s:\n%s", p.name, p.err, p.log, p.logTail())
		case <-deadline.C:
			return fmt.Errorf("%s not ready after %v: %w; log %s:\n%s", p.name, ReadyTimeout, err, p.log, p.logTail())
		case <-tick.C:
		}
	}
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logTail returns the last lines of the process's log, for error messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	lines = lines[max(0, len(lines)-20):]
	return string(bytes.Join(lines, []byte("\n")))
}

// runTool runs a short-lived tool and returns its stdout; a failure's error
// carries stderr.
func runTool(cmd *exec.Cmd) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = StopTimeout
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) || stderr.Len() > 0 {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	return stdout.Bytes(), nil
}
