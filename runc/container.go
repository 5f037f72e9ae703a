package runc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrExited is returned (wrapped) by Container.WaitReady when the
// container's process exits before it answers.
var ErrExited = errors.New("container exited")

// Container is a started container. Its methods may be called from many
// goroutines.
type Container struct {
	r       *Runtime
	id      string
	bundle  string
	logPath string
	pid     int

	exited chan struct{} // closed once the container's process has exited
	pidfd  *os.File      // watches the process; nil if it was gone at once
	// watching is closed when the watcher goroutine has returned.
	watching chan struct{}
	// logDone is closed when the log's copier has returned, after every
	// writer closed the pipe logR reads (see Runtime.run).
	logR    *os.File
	logDone chan struct{}

	mu      sync.Mutex // serialises Stop
	stopped bool
}

// ID returns the container id.
func (c *Container) ID() string { return c.id }

// PID returns the host pid of the container's first process.
func (c *Container) PID() int { return c.pid }

// LogPath returns the file that holds the container's standard output and
// error. It is removed by Stop.
func (c *Container) LogPath() string { return c.logPath }

// Exited returns a channel that is closed once the container's process has
// exited, whether it stopped on its own or was stopped.
func (c *Container) Exited() <-chan struct{} { return c.exited }

// watch starts the goroutine that closes c.exited when the process exits.
// It watches a pidfd, which works although the process is not our child
// (runc's detached process is adopted by init), through the runtime's
// poller so that no thread blocks. The goroutine is owned by c: it returns
// when the process exits or when Stop closes the pidfd.
func (c *Container) watch() {
	c.exited = make(chan struct{})
	c.watching = make(chan struct{})
	fd, err := unix.PidfdOpen(c.pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		// ESRCH: gone already (and reaped). Anything else we cannot watch,
		// and saying "exited" would be a lie, so say it only for ESRCH.
		if errors.Is(err, unix.ESRCH) {
			close(c.exited)
		} else {
			c.r.logger().Warn("cannot watch container process", "id", c.id, "pid", c.pid, "err", err)
		}
		close(c.watching)
		return
	}
	c.pidfd = os.NewFile(uintptr(fd), "pidfd")
	go func() {
		defer close(c.watching)
		if waitReadable(c.pidfd) == nil {
			close(c.exited)
		}
	}()
}

// waitReadable blocks until f, a pidfd, polls readable (its process
// exited) or f is closed.
func waitReadable(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ready bool
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, perr := unix.Poll(fds, 0)
		ready = perr == nil && n > 0
		// false asks the poller to wait for readability, then call again.
		return ready || (perr != nil && !errors.Is(perr, unix.EINTR))
	})
	if err == nil && !ready {
		err = errors.New("poll on pidfd failed")
	}
	return err
}

// hasExited reports whether the process is known to have exited.
func (c *Container) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// WaitReady is the package's WaitReady for this container's function at
// url, except that it fails at once, wrapping ErrExited and quoting the
// tail of the container's log, when the process exits first.
func (c *Container) WaitReady(ctx context.Context, url string) (time.Duration, error) {
	d, err := waitReady(ctx, url, c.exited)
	if errors.Is(err, ErrExited) {
		c.closeLog(ctx) // its last words may still be in the pipe
		return d, fmt.Errorf("runc: container %s: %w before %s answered (after %v)%s", c.id, err, url, d.Round(time.Millisecond), quoteLog(c.LogTail()))
	}
	return d, err
}

// Stop ends the container: SIGTERM, then SIGKILL if it has not exited after
// the Runtime's StopGrace, then `runc delete --force`; then it removes the
// bundle and the log. It returns once the process has exited. If ctx ends
// first Stop returns its error, and may be called again; once it succeeded
// it does nothing.
func (c *Container) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	if err := c.stop(ctx); err != nil {
		return fmt.Errorf("runc: stop container %s: %w", c.id, err)
	}
	c.stopped = true
	return nil
}

func (c *Container) stop(ctx context.Context) error {
	watched := c.pidfd != nil
	if watched && !c.hasExited() {
		// An error means the process exited meanwhile, or runc cannot
		// signal it; either way, SIGKILL and delete come next.
		if err := c.r.kill(ctx, c.id, "TERM"); err != nil {
			c.r.logger().Debug("SIGTERM", "id", c.id, "err", err)
		}
		grace := time.NewTimer(c.r.stopGrace())
		defer grace.Stop()
		select {
		case <-c.exited:
		case <-grace.C:
			c.r.logger().Info("container ignored SIGTERM; killing it", "id", c.id, "grace", c.r.stopGrace())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// delete --force sends SIGKILL to a running container and waits for it.
	if err := c.r.delete(ctx, c.id); err != nil {
		return err
	}
	if watched {
		select {
		case <-c.exited:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.pidfd.Close()
	} else if !c.hasExited() {
		close(c.exited) // unwatched, but delete --force has killed it
	}
	<-c.watching
	c.closeLog(ctx)
	if err := os.RemoveAll(c.bundle); err != nil {
		return err
	}
	c.r.logger().Info("container stopped", "id", c.id, "pid", c.pid)
	return nil
}

// closeLog waits until the log has every byte the container wrote: its
// processes are gone, so the pipe ends soon. A process that escaped with
// the pipe cannot hold it past ctx: then the pipe is closed under it.
func (c *Container) closeLog(ctx context.Context) {
	if c.logDone == nil {
		return
	}
	select {
	case <-c.logDone:
	case <-ctx.Done():
		c.logR.Close()
		<-c.logDone
	}
}

// logTailBytes and logTailLines bound how much of a log an error quotes.
const (
	logTailBytes = 4 << 10
	logTailLines = 20
)

// LogTail returns the last lines of the container's log (at most 20 lines,
// 4 KiB), or "" if there is none.
func (c *Container) LogTail() string {
	// The newest bytes are in the log; just after a rotation, the ones
	// before them are in the rotated half.
	newest, cut := fileTail(c.logPath, logTailBytes)
	if n := len(newest); n < logTailBytes {
		var older []byte
		older, cut = fileTail(c.logPath+rotatedSuffix, logTailBytes-n)
		newest = append(older, newest...)
	}
	return tailLines(newest, cut, logTailLines)
}

// fileTail returns the last n bytes of the file at path (nil if it cannot
// be read), and whether that cuts the file.
func fileTail(path string, n int) ([]byte, bool) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false
	}
	off := max(fi.Size()-int64(n), 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, int64(n)))
	if err != nil {
		return nil, false
	}
	return b, off > 0
}

// tailLines returns the last n lines of b; cut means b starts within a
// line, which is then dropped.
func tailLines(b []byte, cut bool, n int) string {
	if cut {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// quoteLog formats a log tail to end an error message.
func quoteLog(tail string) string {
	if tail == "" {
		return " (its log is empty)"
	}
	return "; log tail:\n" + tail
}
