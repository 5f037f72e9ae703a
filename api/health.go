package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// HealthPath is where a manager answers Health, outside Prefix.
const HealthPath = "/healthz"

// Roles a manager reports in Health.
const (
	RoleLeader   = "leader"
	RoleFollower = "follower"
)

// Health is a manager's GET /healthz answer. A manager with a local store
// (bbolt) is always the leader; of several managers on one etcd, one leads
// and decides, the followers send clients to it.
type Health struct {
	Status string `json:"status"`           // "ok"
	Role   string `json:"role"`             // RoleLeader or RoleFollower
	Leader string `json:"leader,omitempty"` // the leader's URL, if known
}

// HealthOf asks the manager at base (one URL, not the client's list) for
// its Health.
func (c *Client) HealthOf(ctx context.Context, base string) (Health, error) {
	var h Health
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+HealthPath, nil)
	if err != nil {
		return h, fmt.Errorf("health of %s: %w", base, err)
	}
	resp, err := c.noRedirect().Do(req)
	if err != nil {
		return h, fmt.Errorf("health of %s: %w", base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return h, fmt.Errorf("health of %s: reading answer: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("health of %s: %w", base, &StatusError{Code: resp.StatusCode, Message: string(data)})
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return h, fmt.Errorf("health of %s: decoding answer: %w", base, err)
	}
	return h, nil
}
