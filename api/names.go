package api

import (
	"fmt"
	"net"
	"strconv"
)

// MaxNameLen bounds VM and function names.
const MaxNameLen = 128

// ValidName reports why s is not a valid VM or function name: 1 to 128
// characters of letters, digits, '.', '_' and '-', starting with a letter or
// digit. Names appear in URLs, file names and metric labels, so they are kept
// plain.
func ValidName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%s name is empty", kind)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%s name is %d bytes long, the limit is %d", kind, len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum || i > 0 && (c == '.' || c == '_' || c == '-') {
			continue
		}
		return fmt.Errorf("%s name %q: character %q at %d is not allowed (use letters, digits, '.', '_', '-', starting with a letter or digit)", kind, s, c, i)
	}
	return nil
}

// ValidAddr reports why s is not a "host:port" address a peer can dial.
func ValidAddr(s string) error {
	if len(s) > 256 {
		return fmt.Errorf("address is %d bytes long, the limit is 256", len(s))
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("address %q: %w", s, err)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("address %q: port must be a number from 1 to 65535", s)
	}
	return nil
}
