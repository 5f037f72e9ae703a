package runc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Probe pacing: the first probes come quickly, as a started function is
// often ready within milliseconds, then the interval grows to maxProbeEvery
// so that many waiting containers do not busy the machine. The interval
// bounds the error of the measured time to ready.
const (
	minProbeEvery = 5 * time.Millisecond
	maxProbeEvery = 20 * time.Millisecond
	probeTimeout  = 2 * time.Second // one probe; a function may answer its first request slowly
)

// WaitReady polls url with HTTP GET until it answers with a 2xx status or
// ctx ends, and returns how long it waited. This is how a FaaS platform
// knows a function is provisioned: its process answered. Connection errors
// and other statuses mean "not yet"; the error on ctx's end wraps ctx's
// error and names the last probe's outcome.
func WaitReady(ctx context.Context, url string) (time.Duration, error) {
	return waitReady(ctx, url, nil)
}

// waitReady is WaitReady that also gives up, with ErrExited, once exited
// is closed.
func waitReady(ctx context.Context, url string, exited <-chan struct{}) (time.Duration, error) {
	start := time.Now()
	if _, err := http.NewRequest(http.MethodGet, url, nil); err != nil {
		return 0, fmt.Errorf("runc: readiness probe: %w", err)
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: probeTimeout}
	every := minProbeEvery
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last error
	for {
		select {
		case <-timer.C:
		case <-exited:
			return time.Since(start), ErrExited
		case <-ctx.Done():
			d := time.Since(start)
			return d, fmt.Errorf("runc: %s not ready after %v (last probe: %v): %w", url, d.Round(time.Millisecond), last, ctx.Err())
		}
		ok, err := probe(ctx, client, url)
		if ok {
			return time.Since(start), nil
		}
		if ctx.Err() == nil || last == nil {
			// A probe cut short by the deadline says nothing about the
			// container; the answer before it does.
			last = err
		}
		timer.Reset(every)
		every = min(every*3/2, maxProbeEvery)
	}
}

// probe sends one GET to url and reports whether it answered 2xx; if not,
// err says what happened instead.
func probe(ctx context.Context, client *http.Client, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return false, fmt.Errorf("status %s", resp.Status)
	}
	return true, nil
}
