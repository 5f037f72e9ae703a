package main

import (
	"github.com/faasnet/faasnet/internal/httpserver"
	"github.com/spf13/pflag"
)

// addServerFlags adds the flags of a server's limits against slow and idle
// clients to f, defaulting to httpserver.Defaults.
func addServerFlags(f *pflag.FlagSet, o *httpserver.Options) {
	d := httpserver.Defaults
	f.DurationVar(&o.ReadHeaderTimeout, "read-header-timeout", d.ReadHeaderTimeout, "drop a connection that has not sent a request's headers within this")
	f.DurationVar(&o.ReadTimeout, "read-timeout", d.ReadTimeout, "drop a connection that has not sent a whole request (body included) within this")
	f.DurationVar(&o.WriteTimeout, "write-timeout", d.WriteTimeout, "drop a connection that does not take one write of a response within this (long responses may run longer)")
	f.DurationVar(&o.IdleTimeout, "idle-timeout", d.IdleTimeout, "close a kept-alive connection idle this long")
	f.IntVar(&o.MaxHeaderBytes, "max-header-bytes", d.MaxHeaderBytes, "largest request headers accepted")
	f.IntVar(&o.MaxConns, "max-conns", d.MaxConns, "connections served at once; more wait")
}
