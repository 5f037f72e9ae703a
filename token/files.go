package token

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/faasnet/faasnet/internal/privfile"
)

// The files the manager keeps its bootstrap tokens in, in its data
// directory: one line each, mode 0600.
const (
	AdminFile = "admin.token"
	JoinFile  = "join.token"
)

// ReadFile reads a token file: one token, optionally followed by one
// newline, in a file only its owner may access.
func ReadFile(path string) (string, error) {
	b, err := privfile.Read(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSuffix(string(b), "\n")
	secret, err := ParseSecret(s)
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return secret, nil
}

// WriteFile writes secret to path as one line, mode 0600, atomically.
func WriteFile(path, secret string) error {
	return privfile.WritePrivate(path, []byte(secret+"\n"))
}

// Bootstrap makes sure dir holds a live admin token and a live join token
// and that set knows them. On first start it creates both; on a restart it
// reuses the files. A file whose token set does not know (the store was
// reset) is added back; a file whose token was revoked or has expired is
// replaced, so the files always hold tokens that work. It reports whether
// set changed, so the caller persists it.
func Bootstrap(dir string, set *Set, now time.Time) (changed bool, err error) {
	for _, b := range []struct {
		file string
		role Role
	}{{AdminFile, Admin}, {JoinFile, Join}} {
		c, err := bootstrapOne(filepath.Join(dir, b.file), b.role, set, now)
		if err != nil {
			return changed, err
		}
		changed = changed || c
	}
	return changed, nil
}

func bootstrapOne(path string, role Role, set *Set, now time.Time) (bool, error) {
	secret, err := ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, replace(path, role, set, now)
	case err != nil:
		return false, err
	}
	r, err := set.Authenticate(secret, now)
	switch {
	case err == nil:
		if r.Role != role {
			return false, fmt.Errorf("token file %s holds a %s token, want %s", path, r.Role, role)
		}
		return false, nil
	case errors.Is(err, ErrUnknown):
		_, rec, err := New(role, now, 0)
		if err != nil {
			return false, err
		}
		rec.Hash = hash(secret)
		return true, set.Add(rec)
	case errors.Is(err, ErrRevoked), errors.Is(err, ErrExpired):
		return true, replace(path, role, set, now)
	default:
		return false, err
	}
}

// replace creates a new token of role, adds it to set and writes it to path.
func replace(path string, role Role, set *Set, now time.Time) error {
	secret, rec, err := New(role, now, 0)
	if err != nil {
		return err
	}
	// The file first: if writing it fails, set is unchanged and the old
	// file (if any) still holds what it held.
	if err := WriteFile(path, secret); err != nil {
		return err
	}
	return set.Add(rec)
}

// RotateJoin replaces the join token: a new one is written to dir's join
// file and every other join token is revoked, so a leaked join token stops
// admitting VMs. Enrolled VMs keep their certificates.
func RotateJoin(dir string, set *Set, now time.Time) error {
	old := set.Records()
	if err := replace(filepath.Join(dir, JoinFile), Join, set, now); err != nil {
		return err
	}
	for _, r := range old {
		if r.Role == Join && r.Revoked.IsZero() {
			if err := set.Revoke(r.ID, now); err != nil {
				return err
			}
		}
	}
	return nil
}
