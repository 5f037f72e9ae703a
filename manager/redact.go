package manager

import (
	"encoding/json"
	"strings"
)

// redactEnv returns a spec for listings: each env entry KEY=VALUE becomes
// "KEY=", the name with an empty value, so an operator sees which variables
// are set and nobody reads a secret from a listing. Only the VMs that run
// the function get the values, in their assignments.
//
// The spec is read as the workers read it (encoding/json, which matches
// field names case-insensitively and keeps the last of duplicate keys), so
// every key a worker would take for env is redacted. A spec that does not
// decode is left out whole rather than risk a leak.
func redactEnv(spec json.RawMessage) json.RawMessage {
	if len(spec) == 0 || string(spec) == "null" {
		return spec
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(spec, &fields); err != nil {
		return nil
	}
	var env []string
	found := false
	for k, v := range fields {
		if !strings.EqualFold(k, "env") {
			continue
		}
		delete(fields, k)
		found = true
		// Which of several spellings a worker would use does not matter:
		// all are redacted and one list of names is shown.
		var vals []string
		if json.Unmarshal(v, &vals) == nil {
			env = append(env, vals...)
		}
	}
	if !found {
		return spec
	}
	for i, e := range env {
		name, _, _ := strings.Cut(e, "=")
		env[i] = name + "="
	}
	if env == nil {
		env = []string{}
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil
	}
	fields["env"] = b
	out, err := json.Marshal(fields)
	if err != nil {
		return nil
	}
	return out
}
