// Package deploy holds the files faasnet ships to deploy it: systemd units
// (systemd/) and Kubernetes manifests (kubernetes/). It has no code; its
// test decodes every manifest strictly with the Kubernetes API types,
// checks the references between the objects and against the flags the
// faasnet binary accepts, and has systemd check the units.
package deploy
