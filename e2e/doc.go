// Package e2e holds end-to-end tests that run faasnet as real processes
// (manager and workers) against the real third-party components: the Debian
// docker-registry, skopeo and containerd. It has no code of its own.
package e2e
