package token

import (
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func TestNew(t *testing.T) {
	a, ra, err := New(Admin, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, rb, _ := New(Admin, t0, 0)
	if a == b || ra.ID == rb.ID {
		t.Fatal("two tokens are equal")
	}
	if _, err := ParseSecret(a); err != nil {
		t.Fatalf("New made a token ParseSecret refuses: %v", err)
	}
	if strings.Contains(ra.Hash, a) || ra.Hash == "" {
		t.Fatal("record holds the secret or no hash")
	}
	if _, _, err := New("root", t0, 0); err == nil {
		t.Error("made a token of an unknown role")
	}
}

func TestAuthenticate(t *testing.T) {
	s, err := NewSet(nil)
	if err != nil {
		t.Fatal(err)
	}
	admin, _, _ := s.Create(Admin, t0, 0)
	read, rr, _ := s.Create(Read, t0, time.Hour)
	gone, rg, _ := s.Create(Read, t0, 0)
	if err := s.Revoke(rg.ID, t0); err != nil {
		t.Fatal(err)
	}
	stranger, _, _ := New(Admin, t0, 0)
	tests := []struct {
		name   string
		secret string
		now    time.Time
		role   Role
		err    error
	}{
		{"admin", admin, t0.Add(1000 * time.Hour), Admin, nil},
		{"read", read, t0.Add(time.Hour - time.Second), Read, nil},
		{"read expired", read, t0.Add(time.Hour), "", ErrExpired},
		{"revoked", gone, t0, "", ErrRevoked},
		{"unknown", stranger, t0, "", ErrUnknown},
		{"malformed", "hunter2", t0, "", ErrMalformed},
		{"one character off", read[:42] + flip(read[42]), t0, "", errAnyOf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := s.Authenticate(tt.secret, tt.now)
			if tt.err == nil {
				if err != nil || r.Role != tt.role {
					t.Fatalf("Authenticate = %+v, %v; want role %s", r, err, tt.role)
				}
				return
			}
			if tt.err == errAnyOf {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("Authenticate = %v, want %v", err, tt.err)
			}
		})
	}
	if err := s.Revoke("0000000000000000", t0); !errors.Is(err, ErrUnknown) {
		t.Errorf("Revoke of an unknown id = %v", err)
	}
	// Records survive a round trip through the caller's store.
	s2, err := NewSet(s.Records())
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s2.Authenticate(read, t0); err != nil || r.ID != rr.ID {
		t.Errorf("after reload: %+v, %v", r, err)
	}
	if _, err := s2.Authenticate(gone, t0); !errors.Is(err, ErrRevoked) {
		t.Errorf("revocation lost in reload: %v", err)
	}
}

var errAnyOf = errors.New("any error")

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestNewSetRefuses(t *testing.T) {
	_, r, _ := New(Read, t0, 0)
	dupHash := r
	dupHash.ID = "0123456789abcdef"
	bad := []struct {
		name string
		recs []Record
	}{
		{"same id twice", []Record{r, r}},
		{"same secret twice", []Record{r, dupHash}},
		{"bad role", []Record{{ID: r.ID, Role: "root", Hash: r.Hash}}},
		{"bad hash", []Record{{ID: r.ID, Role: Read, Hash: "abc"}}},
		{"bad id", []Record{{ID: "x", Role: Read, Hash: r.Hash}}},
	}
	for _, tt := range bad {
		if _, err := NewSet(tt.recs); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestRoleAllows(t *testing.T) {
	for _, tt := range []struct {
		have, need Role
		want       bool
	}{
		{Admin, Admin, true}, {Admin, Read, true}, {Admin, Join, true},
		{Read, Read, true}, {Read, Admin, false}, {Read, Join, false},
		{Join, Join, true}, {Join, Read, false}, {Join, Admin, false},
	} {
		if got := tt.have.Allows(tt.need); got != tt.want {
			t.Errorf("%s.Allows(%s) = %v", tt.have, tt.need, got)
		}
	}
}

func TestParseBearer(t *testing.T) {
	tok, _, _ := New(Read, t0, 0)
	tests := []struct {
		header string
		ok     bool
	}{
		{"Bearer " + tok, true},
		{"bearer " + tok, true},
		{"BEARER " + tok, true},
		{"Bearer  " + tok, false},
		{" Bearer " + tok, false},
		{"Bearer " + tok + " ", false},
		{"Bearer " + tok + "=", false},
		{"Bearer " + tok[:42], false},
		{"Bearer " + tok[:42] + "+", false},
		{"Bearer " + tok[:42] + "/", false},
		{"Basic " + tok, false},
		{"Bearer\t" + tok, false},
		{tok, false},
		{"Bearer", false},
		{"", false},
		{"Bearer " + strings.Repeat("A", 42) + "B", false}, // non-canonical: trailing bits set
	}
	for _, tt := range tests {
		got, err := ParseBearer(tt.header)
		if tt.ok != (err == nil) {
			t.Errorf("ParseBearer(%q) = %q, %v; want ok=%v", tt.header, got, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseBearer(%q): error %v does not wrap ErrMalformed", tt.header, err)
		}
		if err == nil && got != tok {
			t.Errorf("ParseBearer(%q) = %q", tt.header, got)
		}
	}
}

func FuzzParseBearer(f *testing.F) {
	tok, _, _ := New(Read, t0, 0)
	f.Add("Bearer " + tok)
	f.Add("bearer " + tok + "\n")
	f.Add("Basic dXNlcjpwYXNz")
	f.Add("Bearer " + strings.Repeat("A", 42) + "B")
	f.Fuzz(func(t *testing.T, header string) {
		got, err := ParseBearer(header)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// What is accepted is exactly one token, and the header is that token
		// after the scheme.
		if len(header) != len("Bearer ")+SecretLen || header[len("Bearer "):] != got {
			t.Fatalf("ParseBearer(%q) = %q", header, got)
		}
		if _, err := ParseSecret(got); err != nil {
			t.Fatalf("accepted %q which ParseSecret refuses: %v", got, err)
		}
	})
}

func FuzzParseSecret(f *testing.F) {
	tok, _, _ := New(Read, t0, 0)
	f.Add(tok)
	f.Add(strings.Repeat("A", 42) + "B")
	f.Add(strings.Repeat("_", 43))
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSecret(s)
		if err != nil {
			return
		}
		if got != s || len(s) != SecretLen {
			t.Fatalf("ParseSecret(%q) = %q", s, got)
		}
	})
}

func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestBootstrap(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewSet(nil)
	changed, err := Bootstrap(dir, s, t0)
	if err != nil || !changed {
		t.Fatalf("first Bootstrap = %v, %v", changed, err)
	}
	read := func(name string) string {
		t.Helper()
		if p := perm(t, filepath.Join(dir, name)); p != 0o600 {
			t.Fatalf("%s mode %#o, want 0600", name, p)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(b), "\n") != 1 || !strings.HasSuffix(string(b), "\n") {
			t.Fatalf("%s is not one line: %q", name, b)
		}
		return strings.TrimSuffix(string(b), "\n")
	}
	admin, join := read(AdminFile), read(JoinFile)
	if r, err := s.Authenticate(admin, t0); err != nil || r.Role != Admin {
		t.Fatalf("admin token: %+v, %v", r, err)
	}
	if r, err := s.Authenticate(join, t0); err != nil || r.Role != Join {
		t.Fatalf("join token: %+v, %v", r, err)
	}

	// Restart with the stored records: nothing changes.
	s2, _ := NewSet(s.Records())
	changed, err = Bootstrap(dir, s2, t0.Add(time.Hour))
	if err != nil || changed || read(AdminFile) != admin || read(JoinFile) != join {
		t.Fatalf("restart changed the tokens (changed=%v, err=%v)", changed, err)
	}

	// Restart with a lost store: the files are trusted again.
	s3, _ := NewSet(nil)
	changed, err = Bootstrap(dir, s3, t0)
	if err != nil || !changed || read(AdminFile) != admin {
		t.Fatalf("lost store: changed=%v, err=%v", changed, err)
	}
	if r, err := s3.Authenticate(admin, t0); err != nil || r.Role != Admin {
		t.Fatalf("admin token after a lost store: %+v, %v", r, err)
	}

	// A revoked admin token is replaced, not revived.
	r, _ := s2.Authenticate(admin, t0)
	s2.Revoke(r.ID, t0)
	if _, err := Bootstrap(dir, s2, t0); err != nil {
		t.Fatal(err)
	}
	if next := read(AdminFile); next == admin {
		t.Fatal("revoked admin token kept in the file")
	} else if _, err := s2.Authenticate(next, t0); err != nil {
		t.Fatalf("new admin token: %v", err)
	}
	if _, err := s2.Authenticate(admin, t0); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked admin token: %v", err)
	}
}

func TestBootstrapRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string, s *Set)
		want  string
	}{
		{"admin file readable by group", func(t *testing.T, dir string, s *Set) {
			os.Chmod(filepath.Join(dir, AdminFile), 0o640)
		}, "chmod 600"},
		{"join file readable by others", func(t *testing.T, dir string, s *Set) {
			os.Chmod(filepath.Join(dir, JoinFile), 0o604)
		}, "chmod 600"},
		{"garbage", func(t *testing.T, dir string, s *Set) {
			os.WriteFile(filepath.Join(dir, AdminFile), []byte("hunter2\n"), 0o600)
		}, "malformed"},
		{"two lines", func(t *testing.T, dir string, s *Set) {
			b, _ := os.ReadFile(filepath.Join(dir, AdminFile))
			os.WriteFile(filepath.Join(dir, AdminFile), append(b, b...), 0o600)
		}, "malformed"},
		{"join token in the admin file", func(t *testing.T, dir string, s *Set) {
			b, _ := os.ReadFile(filepath.Join(dir, JoinFile))
			os.WriteFile(filepath.Join(dir, AdminFile), b, 0o600)
		}, "holds a join token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := NewSet(nil)
			if _, err := Bootstrap(dir, s, t0); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, dir, s)
			if _, err := Bootstrap(dir, s, t0); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Bootstrap = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestRotateJoin(t *testing.T) {
	dir := t.TempDir()
	s, _ := NewSet(nil)
	if _, err := Bootstrap(dir, s, t0); err != nil {
		t.Fatal(err)
	}
	old, err := ReadFile(filepath.Join(dir, JoinFile))
	if err != nil {
		t.Fatal(err)
	}
	extra, _, _ := s.Create(Join, t0, 0)
	admin, _ := ReadFile(filepath.Join(dir, AdminFile))
	if err := RotateJoin(dir, s, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	next, err := ReadFile(filepath.Join(dir, JoinFile))
	if err != nil {
		t.Fatal(err)
	}
	if next == old {
		t.Fatal("join token unchanged")
	}
	if r, err := s.Authenticate(next, t0); err != nil || r.Role != Join {
		t.Fatalf("new join token: %+v, %v", r, err)
	}
	for _, tok := range []string{old, extra} {
		if _, err := s.Authenticate(tok, t0); !errors.Is(err, ErrRevoked) {
			t.Errorf("old join token still works: %v", err)
		}
	}
	if _, err := s.Authenticate(admin, t0); err != nil {
		t.Errorf("rotation touched the admin token: %v", err)
	}
}

func TestFromRequest(t *testing.T) {
	tok, _, _ := New(Read, t0, 0)
	tests := []struct {
		name    string
		headers []string
		want    error
	}{
		{"one", []string{"Bearer " + tok}, nil},
		{"none", nil, ErrMissing},
		{"two", []string{"Bearer " + tok, "Bearer " + tok}, ErrMalformed},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/api/v1/functions", nil)
			for _, h := range tt.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := FromRequest(r)
			if tt.want == nil {
				if err != nil || got != tok {
					t.Fatalf("FromRequest = %q, %v", got, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("FromRequest = %v, want %v", err, tt.want)
			}
		})
	}
}
