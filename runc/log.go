package runc

import (
	"fmt"
	"io"
	"os"
)

// DefaultMaxLogSize is Runtime.MaxLogSize when that is zero.
const DefaultMaxLogSize = 8 << 20

// rotatedSuffix names the older half of a container's log.
const rotatedSuffix = ".1"

// logWriter keeps a container's newest output within max bytes on disk:
// the log file holds up to max/2 bytes of the newest output, and once full
// it becomes LOG.1 (replacing the one before) and a new log file begins. So
// between max/2 and max bytes of the newest output are kept, whatever the
// container writes.
type logWriter struct {
	path string
	half int64
	f    *os.File
	n    int64 // bytes in f
}

func newLogWriter(path string, limit int64) (*logWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &logWriter{path: path, half: max(limit/2, 1), f: f, n: fi.Size()}, nil
}

func (w *logWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if w.n >= w.half {
			if err := w.rotate(); err != nil {
				return written, err
			}
		}
		k := int(min(int64(len(p)), w.half-w.n))
		n, err := w.f.Write(p[:k])
		written, w.n, p = written+n, w.n+int64(n), p[n:]
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

func (w *logWriter) rotate() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("log: %w", err)
	}
	if err := os.Rename(w.path, w.path+rotatedSuffix); err != nil {
		return fmt.Errorf("log: rotating: %w", err)
	}
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("log: %w", err)
	}
	w.f, w.n = f, 0
	return nil
}

func (w *logWriter) Close() error { return w.f.Close() }

// copyLog copies what the container writes to r into w until every writer
// has closed r's pipe, then closes r and w. A log that cannot be written
// any more is drained, so that the container never blocks on its output.
func copyLog(r *os.File, w *logWriter) {
	defer r.Close()
	defer w.Close()
	if _, err := io.Copy(w, r); err != nil {
		io.Copy(io.Discard, r)
	}
}
