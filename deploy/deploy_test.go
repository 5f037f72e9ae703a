package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/faasnet/faasnet/containerdcfg"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// manifests are the decoded objects of every file under kubernetes/.
type manifests struct {
	namespaces   map[string]*corev1.Namespace
	accounts     map[string]*corev1.ServiceAccount
	secrets      map[string]*corev1.Secret
	services     map[string]*corev1.Service
	statefulSets map[string]*appsv1.StatefulSet
	daemonSets   map[string]*appsv1.DaemonSet
	budgets      map[string]*policyv1.PodDisruptionBudget
	policies     map[string]*networkingv1.NetworkPolicy
}

// decodeStrict decodes one YAML document into obj, refusing unknown and
// duplicate fields, as `kubectl apply --validate=strict` would.
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.DisallowUnknownFields()
	if err := d.Decode(obj); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("more than one value")
	}
	return nil
}

// splitDocs splits a YAML stream at its "---" lines, dropping documents
// that hold only comments.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		j, err := yaml.YAMLToJSON(cur.Bytes())
		if err != nil || string(j) != "null" {
			docs = append(docs, slices.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if strings.TrimRight(sc.Text(), " ") == "---" {
			flush()
			continue
		}
		cur.WriteString(sc.Text() + "\n")
	}
	flush()
	return docs
}

// decodeObject decodes doc strictly into the type its apiVersion and kind
// name and files it in m.
func (m *manifests) decodeObject(doc []byte) (string, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "", err
	}
	gvk := tm.APIVersion + "/" + tm.Kind
	var meta *metav1.ObjectMeta
	var err error
	switch gvk {
	case "v1/Namespace":
		o := &corev1.Namespace{}
		err, meta = decodeStrict(doc, o), &o.ObjectMeta
		put(m.namespaces, o.Name, o)
	case "v1/ServiceAccount":
		o := &corev1.ServiceAccount{}
		err, meta = decodeStrict(doc, o), &o.ObjectMeta
		put(m.accounts, o.Name, o)
	case "v1/Secret":
		o := &corev1.Secret{}
		err, meta = decodeStrict(doc, o), &o.ObjectMeta
		put(m.secrets, o.Name, o)
	case "v1/Service":
		o := &corev1.Service{}
		err, meta = decodeStrict(doc, o), &o.ObjectMeta
		put(m.services, o.Name, o)
	case "apps/v1/StatefulSet":
		o := &appsv1.StatefulSet{}
		err, meta = decodeStrict(doc, o), &o.ObjectMeta
		put(m.statefulSets, o.Name, o)
	case "apps/v1/DaemonSet":
		o := &appsv1.DaemonSet{}
		err, meta = decodeStrict(doc, o), &o.ObjectMeta
		put(m.daemonSets, o.Name, o)
	case "policy/v1/PodDisruptionBudget":
		o := &policyv1.PodDisruptionBudget{}
		err, meta = decodeStrict(doc, o), &o.ObjectMeta
		put(m.budgets, o.Name, o)
	case "networking.k8s.io/v1/NetworkPolicy":
		o := &networkingv1.NetworkPolicy{}
		err, meta = decodeStrict(doc, o), &o.ObjectMeta
		put(m.policies, o.Name, o)
	default:
		return gvk, fmt.Errorf("kind %s: not one the test knows; add its type", gvk)
	}
	if err != nil {
		return gvk, err
	}
	if meta.Name == "" {
		return gvk, fmt.Errorf("%s without a name", gvk)
	}
	return gvk + " " + meta.Name, nil
}

func put[T any](m map[string]T, name string, o T) { m[name] = o }

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{
		namespaces: map[string]*corev1.Namespace{}, accounts: map[string]*corev1.ServiceAccount{},
		secrets: map[string]*corev1.Secret{}, services: map[string]*corev1.Service{},
		statefulSets: map[string]*appsv1.StatefulSet{}, daemonSets: map[string]*appsv1.DaemonSet{},
		budgets: map[string]*policyv1.PodDisruptionBudget{}, policies: map[string]*networkingv1.NetworkPolicy{},
	}
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in kubernetes/ (%v)", err)
	}
	seen := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocs(data) {
			id, err := m.decodeObject(doc)
			if err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
				continue
			}
			if prev, ok := seen[id]; ok {
				t.Errorf("%s: %s again (first in %s)", f, id, prev)
			}
			seen[id] = f
		}
	}
	return m
}

// workload is a pod template with where it came from.
type workload struct {
	name     string
	selector *metav1.LabelSelector
	pod      *corev1.PodTemplateSpec
	claims   []corev1.PersistentVolumeClaim
	replicas int
}

func (m *manifests) workloads() []workload {
	var ws []workload
	for _, s := range m.statefulSets {
		n := 1
		if s.Spec.Replicas != nil {
			n = int(*s.Spec.Replicas)
		}
		ws = append(ws, workload{"StatefulSet " + s.Name, s.Spec.Selector, &s.Spec.Template, s.Spec.VolumeClaimTemplates, n})
	}
	for _, d := range m.daemonSets {
		ws = append(ws, workload{"DaemonSet " + d.Name, d.Spec.Selector, &d.Spec.Template, nil, 0})
	}
	return ws
}

// selects returns the workloads whose pods sel selects.
func (m *manifests) selects(t *testing.T, what string, sel *metav1.LabelSelector) []workload {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("%s: selector: %v", what, err)
		return nil
	}
	if s.Empty() {
		t.Errorf("%s: empty selector selects everything", what)
		return nil
	}
	var got []workload
	for _, w := range m.workloads() {
		if s.Matches(labels.Set(w.pod.Labels)) {
			got = append(got, w)
		}
	}
	if len(got) == 0 {
		t.Errorf("%s: selector %s matches no pod template", what, s)
	}
	return got
}

// namedPort finds a container port by name in the pod.
func namedPort(pod *corev1.PodSpec, name string) (corev1.ContainerPort, bool) {
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return p, true
			}
		}
	}
	return corev1.ContainerPort{}, false
}

func checkPortRef(t *testing.T, what string, pod *corev1.PodSpec, port intstr.IntOrString) {
	t.Helper()
	if port.Type == intstr.String {
		if _, ok := namedPort(pod, port.StrVal); !ok {
			t.Errorf("%s: port %q: no container port of that name", what, port.StrVal)
		}
		return
	}
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if p.ContainerPort == port.IntVal {
				return
			}
		}
	}
	t.Errorf("%s: port %d: no container declares it", what, port.IntVal)
}

func TestManifests(t *testing.T) {
	m := loadManifests(t)
	const ns = "faasnet"
	if m.namespaces[ns] == nil {
		t.Fatalf("no Namespace %s", ns)
	}
	checkNamespaces(t, m, ns)
	for _, w := range m.workloads() {
		checkWorkload(t, m, w)
	}
	for _, s := range m.services {
		what := "Service " + s.Name
		for _, w := range m.selects(t, what, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}) {
			for _, p := range s.Spec.Ports {
				checkPortRef(t, what+" port "+p.Name, &w.pod.Spec, p.TargetPort)
			}
		}
	}
	for _, s := range m.statefulSets {
		svc := m.services[s.Spec.ServiceName]
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("StatefulSet %s: serviceName %q is not a headless Service here", s.Name, s.Spec.ServiceName)
		}
	}
	for _, b := range m.budgets {
		m.selects(t, "PodDisruptionBudget "+b.Name, b.Spec.Selector)
	}
	for _, p := range m.policies {
		what := "NetworkPolicy " + p.Name
		for _, w := range m.selects(t, what, &p.Spec.PodSelector) {
			for _, rule := range p.Spec.Ingress {
				for _, port := range rule.Ports {
					if port.Port != nil {
						checkPortRef(t, what, &w.pod.Spec, *port.Port)
					}
				}
				for _, peer := range rule.From {
					if peer.PodSelector != nil {
						m.selects(t, what+" from", peer.PodSelector)
					}
				}
			}
		}
	}
	checkManagerWiring(t, m)
	checkWorkerWiring(t, m)
}

func checkNamespaces(t *testing.T, m *manifests, ns string) {
	t.Helper()
	metas := map[string]metav1.ObjectMeta{}
	for n, o := range m.accounts {
		metas["ServiceAccount "+n] = o.ObjectMeta
	}
	for n, o := range m.secrets {
		metas["Secret "+n] = o.ObjectMeta
		if len(o.Data) > 0 || len(o.StringData) > 0 {
			t.Errorf("Secret %s holds data: secrets are made with kubectl, never committed", n)
		}
	}
	for n, o := range m.services {
		metas["Service "+n] = o.ObjectMeta
	}
	for n, o := range m.statefulSets {
		metas["StatefulSet "+n] = o.ObjectMeta
	}
	for n, o := range m.daemonSets {
		metas["DaemonSet "+n] = o.ObjectMeta
	}
	for n, o := range m.budgets {
		metas["PodDisruptionBudget "+n] = o.ObjectMeta
	}
	for n, o := range m.policies {
		metas["NetworkPolicy "+n] = o.ObjectMeta
	}
	for what, meta := range metas {
		if meta.Namespace != ns {
			t.Errorf("%s: namespace %q, want %q", what, meta.Namespace, ns)
		}
	}
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func checkWorkload(t *testing.T, m *manifests, w workload) {
	t.Helper()
	spec := &w.pod.Spec
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
		t.Errorf("%s: selector %v does not select its own pods' labels %v (%v)", w.name, w.selector, w.pod.Labels, err)
	}
	if spec.ServiceAccountName == "" || m.accounts[spec.ServiceAccountName] == nil {
		t.Errorf("%s: service account %q is not declared", w.name, spec.ServiceAccountName)
	}
	if a := spec.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("%s: mounts an API token; faasnet calls no Kubernetes API", w.name)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
		if v.Secret != nil && m.secrets[v.Secret.SecretName] == nil {
			t.Errorf("%s: volume %s: Secret %q is not declared", w.name, v.Name, v.Secret.SecretName)
		}
	}
	for _, c := range w.claims {
		volumes[c.Name] = corev1.Volume{Name: c.Name}
	}
	mounted := map[string]bool{}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		what := w.name + " container " + c.Name
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok {
				t.Errorf("%s: mounts %q, which is no volume or claim", what, vm.Name)
			}
			mounted[vm.Name] = true
		}
		env := map[string]bool{}
		for _, e := range c.Env {
			env[e.Name] = true
		}
		for _, a := range slices.Concat(c.Command, c.Args) {
			for _, ref := range envRef.FindAllStringSubmatch(a, -1) {
				if !env[ref[1]] {
					t.Errorf("%s: %q refers to $(%s), which its env does not set", what, a, ref[1])
				}
			}
		}
		probes := []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe}
		for _, p := range probes {
			if p != nil && p.HTTPGet != nil {
				checkPortRef(t, what+" probe", &corev1.PodSpec{Containers: []corev1.Container{c}}, p.HTTPGet.Port)
			}
		}
		for _, p := range c.Ports {
			if spec.HostNetwork && p.HostPort != 0 && p.HostPort != p.ContainerPort {
				t.Errorf("%s: port %s: hostPort %d differs from containerPort %d on the host network", what, p.Name, p.HostPort, p.ContainerPort)
			}
		}
		checkArgs(t, what, c)
	}
	for name := range volumes {
		if !mounted[name] {
			t.Errorf("%s: volume %q is mounted by no container", w.name, name)
		}
	}
}

// checkArgs checks a container's command line against the program it runs:
// faasnet's subcommands and flags, or etcd's flags.
func checkArgs(t *testing.T, what string, c corev1.Container) {
	t.Helper()
	if len(c.Command) != 1 {
		t.Errorf("%s: command %q, want one program (faasnet or etcd) and its arguments in args", what, c.Command)
		return
	}
	switch c.Command[0] {
	case "faasnet":
		checkFaasnetArgs(t, what, c.Args, true)
	case "etcd":
		known := etcdFlags(t)
		for _, a := range c.Args {
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !strings.HasPrefix(a, "--") || !known[name] {
				t.Errorf("%s: etcd does not take %q", what, a)
			}
		}
	default:
		t.Errorf("%s: runs %q, neither faasnet nor etcd", what, c.Command[0])
	}
}

// flagFor finds a container's flag value: "--name=value" in args.
func flagFor(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func container(t *testing.T, pod *corev1.PodSpec, name string, init bool) corev1.Container {
	t.Helper()
	cs := pod.Containers
	if init {
		cs = pod.InitContainers
	}
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

// mustFlag returns a flag's value or fails t.
func mustFlag(t *testing.T, what string, args []string, name string) string {
	t.Helper()
	v, ok := flagFor(args, name)
	if !ok {
		t.Fatalf("%s: no --%s", what, name)
	}
	return v
}

// checkManagerWiring checks that the managers' certificates name what the
// workers dial, and that the etcd members name each other as the pods are
// named.
func checkManagerWiring(t *testing.T, m *manifests) {
	t.Helper()
	sts := m.statefulSets["faasnet-manager"]
	if sts == nil {
		t.Fatal("no StatefulSet faasnet-manager")
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Fatalf("managers: replicas %v, want 3 (etcd's quorum keeps one member away)", sts.Spec.Replicas)
	}
	mgr := container(t, &sts.Spec.Template.Spec, "manager", false)
	etcd := container(t, &sts.Spec.Template.Spec, "etcd", false)
	_, listenPort, err := net.SplitHostPort(mustFlag(t, "manager", mgr.Args, "listen"))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := namedPort(&sts.Spec.Template.Spec, "api"); !ok || strconv.Itoa(int(p.ContainerPort)) != listenPort {
		t.Errorf("manager: --listen port %s, container port api %v", listenPort, p.ContainerPort)
	}
	// The manager's etcd is the member beside it, on the pod's loopback.
	clientURL := mustFlag(t, "etcd", etcd.Args, "listen-client-urls")
	if u, err := url.Parse(clientURL); err != nil || u.Hostname() != "127.0.0.1" {
		t.Errorf("etcd: --listen-client-urls %s, want loopback only: etcd holds the CA key", clientURL)
	}
	if got := mustFlag(t, "manager", mgr.Args, "etcd"); got != clientURL {
		t.Errorf("manager: --etcd %s, the etcd beside it serves %s", got, clientURL)
	}
	domain := sts.Spec.ServiceName + "." + sts.Namespace + ".svc.cluster.local"
	advertise := map[string]bool{}
	var members []string
	_, peerPort, _ := strings.Cut(strings.TrimPrefix(mustFlag(t, "etcd", etcd.Args, "listen-peer-urls"), "http://"), ":")
	for i := range int(*sts.Spec.Replicas) {
		pod := sts.Name + "-" + strconv.Itoa(i)
		for _, name := range strings.Split(mustFlag(t, "manager", mgr.Args, "advertise"), ",") {
			advertise[strings.ReplaceAll(name, "$(POD_NAME)", pod)] = true
		}
		members = append(members, pod+"=http://"+pod+"."+domain+":"+peerPort)
	}
	if got := mustFlag(t, "etcd", etcd.Args, "initial-cluster"); got != strings.Join(members, ",") {
		t.Errorf("etcd: --initial-cluster\n%s\nwant\n%s", got, strings.Join(members, ","))
	}
	if got, want := mustFlag(t, "etcd", etcd.Args, "initial-advertise-peer-urls"), "http://$(POD_NAME)."+domain+":"+peerPort; got != want {
		t.Errorf("etcd: --initial-advertise-peer-urls %s, want %s", got, want)
	}
	if p, ok := namedPort(&sts.Spec.Template.Spec, "etcd-peer"); !ok || strconv.Itoa(int(p.ContainerPort)) != peerPort {
		t.Errorf("etcd: peer port %s, container port etcd-peer %v", peerPort, p.ContainerPort)
	}
	if svc := m.services[sts.Spec.ServiceName]; svc != nil && !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: etcd members must resolve each other before they are ready", svc.Name)
	}

	// Every worker dials managers by names their certificates hold.
	for _, ds := range m.daemonSets {
		w := container(t, &ds.Spec.Template.Spec, "worker", false)
		urls := strings.Split(mustFlag(t, "worker", w.Args, "manager"), ",")
		if len(urls) != int(*sts.Spec.Replicas) {
			t.Errorf("worker: --manager names %d managers, the StatefulSet runs %d", len(urls), *sts.Spec.Replicas)
		}
		for _, s := range urls {
			u, err := url.Parse(s)
			if err != nil || u.Scheme != "https" {
				t.Errorf("worker: --manager %q: not an https URL (%v)", s, err)
				continue
			}
			if !advertise[u.Hostname()] {
				t.Errorf("worker: --manager %s: no manager's certificate names %s (they advertise %v)", s, u.Hostname(), advertise)
			}
			if u.Port() != listenPort {
				t.Errorf("worker: --manager %s: the managers listen on %s", s, listenPort)
			}
		}
	}
}

// checkWorkerWiring checks the worker pod: files the flags name are where
// the volumes put them, the secret's mode passes the worker's check, and
// the init container points containerd at the worker's endpoint.
func checkWorkerWiring(t *testing.T, m *manifests) {
	t.Helper()
	ds := m.daemonSets["faasnet-worker"]
	if ds == nil {
		t.Fatal("no DaemonSet faasnet-worker")
	}
	spec := &ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("worker: hostNetwork %t, dnsPolicy %s; want the host network with cluster DNS", spec.HostNetwork, spec.DNSPolicy)
	}
	w := container(t, spec, "worker", false)
	if sc := w.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Error("worker: not privileged; runc, FUSE and nftables need it")
	}
	if ns := m.namespaces[ds.Namespace]; ns == nil {
		t.Errorf("worker: namespace %q is not declared", ds.Namespace)
	} else if level := ns.Labels["pod-security.kubernetes.io/enforce"]; level != "privileged" {
		t.Errorf("namespace %s: Pod Security level %q would refuse the privileged worker pods", ds.Namespace, level)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	// file returns the volume and the path in it where a container path lies.
	file := func(c corev1.Container, path string) (corev1.Volume, string, bool) {
		for _, vm := range c.VolumeMounts {
			if rel, ok := strings.CutPrefix(path, vm.MountPath+"/"); ok {
				return volumes[vm.Name], rel, true
			}
		}
		return corev1.Volume{}, "", false
	}
	// The Secret's keys are the names of the files in the manager's data
	// directory, as `kubectl create secret --from-file` names them.
	for flag, key := range map[string]string{"ca": pki.CertFile, "join-token": token.JoinFile} {
		path := mustFlag(t, "worker", w.Args, flag)
		v, rel, ok := file(w, path)
		if !ok || v.Secret == nil {
			t.Errorf("worker: --%s %s is in no secret volume", flag, path)
			continue
		}
		if !slices.Contains(v.Secret.Items, corev1.KeyToPath{Key: key, Path: rel}) {
			t.Errorf("worker: --%s %s: the secret volume has no item %s from key %s (the manager's DATA/%s)", flag, path, rel, key, key)
		}
		if flag == "join-token" && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o077 != 0) {
			mode := "unset (0644)"
			if v.Secret.DefaultMode != nil {
				mode = fmt.Sprintf("%#o", *v.Secret.DefaultMode)
			}
			t.Errorf("worker: the join token's volume mode %s lets others read it, and the worker refuses that", mode)
		}
	}
	for _, flag := range []string{"cache", "cert-dir", "run-dir"} {
		path := mustFlag(t, "worker", w.Args, flag)
		v, _, ok := file(w, path)
		if !ok || v.HostPath == nil {
			t.Errorf("worker: --%s %s is not on the host: it would go with the pod", flag, path)
		}
	}
	if rd := mustFlag(t, "worker", w.Args, "run-dir"); !strings.HasPrefix(rd, "/var/lib/") {
		t.Errorf("worker: --run-dir %s: want it under /var/lib, which others may search", rd)
	}
	sockDir := filepath.Dir(containerdcfg.DefaultSnapshotterSocket)
	if v, _, ok := file(w, sockDir+"/x"); !ok || v.HostPath == nil || v.HostPath.Path != sockDir {
		t.Errorf("worker: %s (the snapshotter's socket, the claimed container ranges) is not the host's", sockDir)
	}
	_, peerPort, err := net.SplitHostPort(mustFlag(t, "worker", w.Args, "listen"))
	if p, ok := namedPort(spec, "peer"); err != nil || !ok || strconv.Itoa(int(p.ContainerPort)) != peerPort {
		t.Errorf("worker: --listen port %s, container port peer %v (%v)", peerPort, p.ContainerPort, err)
	}

	init := container(t, spec, "containerd-config", true)
	if len(init.Args) < 2 || init.Args[0] != "containerd" || init.Args[1] != "config" {
		t.Fatalf("init container runs %q, want faasnet containerd config", init.Args)
	}
	if got, want := mustFlag(t, "init", init.Args, "worker"), mustFlag(t, "worker", w.Args, "oci-listen"); got != want {
		t.Errorf("containerd config --worker %s, the worker's --oci-listen is %s", got, want)
	}
	dir := mustFlag(t, "init", init.Args, "dir")
	if v, _, ok := file(init, dir+"/certs.d"); !ok || v.HostPath == nil || v.HostPath.Path != dir {
		t.Errorf("containerd config --dir %s is not the host's %s", dir, dir)
	}
	checkSnapshotterWiring(t, spec, w, init)
}

// checkSnapshotterWiring checks the snapshotter container against the
// containerd configuration the init container writes and the worker it
// reads through. containerd runs on the host and mounts what the
// snapshotter returns, so the snapshotter's socket and root must be the
// host's, at the same paths, and its FUSE mounts must reach the host.
func checkSnapshotterWiring(t *testing.T, spec *corev1.PodSpec, worker, init corev1.Container) {
	t.Helper()
	if got := mustFlag(t, "init", init.Args, "snapshotter"); got != containerdcfg.SnapshotterName {
		t.Errorf("containerd config --snapshotter=%s, want %s (faasnet snapshotter)", got, containerdcfg.SnapshotterName)
	}
	sock, ok := flagFor(init.Args, "snapshotter-socket")
	if !ok {
		sock = containerdcfg.DefaultSnapshotterSocket
	}
	sn := container(t, spec, "snapshotter", false)
	if len(sn.Args) == 0 || sn.Args[0] != "snapshotter" {
		t.Fatalf("snapshotter container runs %q, want faasnet snapshotter", sn.Args)
	}
	if sc := sn.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Error("snapshotter: not privileged; FUSE mounts and Bidirectional propagation need it")
	}
	if got, want := mustFlag(t, "snapshotter", sn.Args, "worker"), mustFlag(t, "worker", worker.Args, "oci-listen"); got != want {
		t.Errorf("snapshotter --worker %s, the worker's --oci-listen is %s", got, want)
	}
	if got := mustFlag(t, "snapshotter", sn.Args, "socket"); got != sock {
		t.Errorf("snapshotter --socket %s, containerd is configured for %s", got, sock)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	// onHost returns the host path of container path p and the mount it
	// is under.
	onHost := func(c corev1.Container, p string) (string, corev1.VolumeMount, bool) {
		for _, vm := range c.VolumeMounts {
			rel, ok := strings.CutPrefix(p, vm.MountPath)
			if v := volumes[vm.Name]; ok && v.HostPath != nil && (rel == "" || rel[0] == '/') {
				return v.HostPath.Path + rel, vm, true
			}
		}
		return "", corev1.VolumeMount{}, false
	}
	if host, _, ok := onHost(sn, sock); !ok || host != sock {
		t.Errorf("snapshotter: socket %s is the host's %q, want the same path for containerd", sock, host)
	}
	root := mustFlag(t, "snapshotter", sn.Args, "root")
	host, vm, ok := onHost(sn, root)
	if !ok || host != root {
		t.Errorf("snapshotter: --root %s is the host's %q, want the same path: containerd mounts the layers from it", root, host)
	}
	if p := vm.MountPropagation; p == nil || *p != corev1.MountPropagationBidirectional {
		t.Errorf("snapshotter: --root %s is mounted with propagation %v; its layer mounts must reach the host (Bidirectional)", root, p)
	}
	if host, fvm, ok := onHost(sn, "/dev/fuse"); !ok || host != "/dev/fuse" {
		t.Errorf("snapshotter: /dev/fuse is not the host's (%q)", host)
	} else if typ := volumes[fvm.Name].HostPath.Type; typ == nil || *typ != corev1.HostPathCharDev {
		t.Errorf("snapshotter: volume %s of /dev/fuse is not of type %s", fvm.Name, corev1.HostPathCharDev)
	}
	// The worker sees the snapshotter's root through its own state: it
	// must follow the host's unmounts, or a layer the snapshotter lets go
	// stays mounted (and its FUSE server waited for) in the worker's view.
	if _, wvm, ok := onHost(worker, root); ok {
		if p := wvm.MountPropagation; p == nil || *p == corev1.MountPropagationNone {
			t.Errorf("worker: %s holds the snapshotter's layer mounts but is mounted without propagation from the host", wvm.MountPath)
		}
	}
}

// faasnetHelp caches each command's flags: name -> whether it takes a value.
var faasnetHelp sync.Map

var helpFlag = regexp.MustCompile(`^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)( \S+)?(?:\s{2,}|$)`)

// faasnetFlags runs `faasnet CMD... --help` and returns its flags, or an
// error if the binary has no such command.
func faasnetFlags(t *testing.T, cmd []string) (map[string]bool, error) {
	t.Helper()
	key := strings.Join(cmd, " ")
	if v, ok := faasnetHelp.Load(key); ok {
		return v.(map[string]bool), nil
	}
	out, err := exec.Command(testenv.Faasnet(t), append(slices.Clone(cmd), "--help")...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("faasnet %s --help: %v\n%s", key, err, out)
	}
	// cobra prints the parent's help for an unknown subcommand.
	if !bytes.Contains(out, []byte("faasnet "+key+" [flags]")) && !bytes.Contains(out, []byte("faasnet "+key+" ")) {
		return nil, fmt.Errorf("faasnet has no command %q:\n%s", key, out)
	}
	flags := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if mm := helpFlag.FindStringSubmatch(line); mm != nil {
			flags[mm[1]] = mm[2] != ""
		}
	}
	faasnetHelp.Store(key, flags)
	return flags, nil
}

// checkFaasnetArgs checks a faasnet command line (after the program):
// the subcommand exists and every flag is one it takes, with a value where
// it takes one. equals says flags and values are joined by "=".
func checkFaasnetArgs(t *testing.T, what string, args []string, equals bool) {
	t.Helper()
	var cmd []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = append(cmd, args[0]), args[1:]
	}
	flags, err := faasnetFlags(t, cmd)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "$") {
			continue // filled in from an environment file
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		takes, ok := flags[name]
		switch {
		case !strings.HasPrefix(a, "--"):
			t.Errorf("%s: %q is no flag of faasnet %s", what, a, strings.Join(cmd, " "))
		case !ok:
			t.Errorf("%s: faasnet %s has no flag --%s", what, strings.Join(cmd, " "), name)
		case takes && !hasValue && equals:
			t.Errorf("%s: --%s takes a value", what, name)
		case takes && !hasValue:
			i++ // the value is the next word
			if i == len(args) {
				t.Errorf("%s: --%s takes a value", what, name)
			}
		case !takes && hasValue && value != "true" && value != "false":
			t.Errorf("%s: --%s is a switch, not %q", what, name, value)
		}
	}
}

var (
	etcdOnce  sync.Once
	etcdKnown map[string]bool
	etcdErr   error
)

var etcdHelpFlag = regexp.MustCompile(`(?m)^\s+--([a-z0-9][a-z0-9-]*)`)

// etcdFlags returns the flags of Debian's etcd (etcd-server).
func etcdFlags(t *testing.T) map[string]bool {
	t.Helper()
	bin := testenv.NeedTool(t, "etcd")
	etcdOnce.Do(func() {
		out, err := exec.Command(bin, "--help").CombinedOutput()
		if err != nil {
			etcdErr = fmt.Errorf("etcd --help: %v\n%s", err, out)
			return
		}
		etcdKnown = map[string]bool{}
		for _, mm := range etcdHelpFlag.FindAllStringSubmatch(string(out), -1) {
			etcdKnown[mm[1]] = true
		}
	})
	if etcdErr != nil {
		t.Fatal(etcdErr)
	}
	return etcdKnown
}

// unit is a systemd unit file: section -> key -> values, in order.
type unit map[string]map[string][]string

var (
	iniSection = regexp.MustCompile(`^\[([A-Za-z]+)\]$`)
	iniKey     = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9]*)=(.*)$`)
)

// parseUnit reads the subset of systemd's unit syntax the shipped units
// use: sections, Key=value lines, comments; no line continuations.
func parseUnit(data []byte) (unit, error) {
	u := unit{}
	section := ""
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case iniSection.MatchString(line):
			section = iniSection.FindStringSubmatch(line)[1]
			if u[section] != nil {
				return nil, fmt.Errorf("line %d: section [%s] again", i+1, section)
			}
			u[section] = map[string][]string{}
		case iniKey.MatchString(line):
			if section == "" {
				return nil, fmt.Errorf("line %d: a key before any section", i+1)
			}
			if strings.HasSuffix(line, `\`) {
				return nil, fmt.Errorf("line %d: continued lines are not used here", i+1)
			}
			kv := iniKey.FindStringSubmatch(line)
			u[section][kv[1]] = append(u[section][kv[1]], kv[2])
		default:
			return nil, fmt.Errorf("line %d: %q is no section, key or comment", i+1, line)
		}
	}
	return u, nil
}

// one returns the single value of section.key, or fails t.
func (u unit) one(t *testing.T, name, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("%s: [%s] %s set %d times, want once", name, section, key, len(vs))
	}
	return vs[0]
}

// notYet are units for commands faasnet does not have yet: their command
// line is checked once the command exists.
var notYet = map[string]bool{}

const faasnetPath = "/usr/local/bin/faasnet"

// unitFlag returns the value of "--name value" in a command line.
func unitFlag(t *testing.T, what string, args []string, name string) string {
	t.Helper()
	i := slices.Index(args, "--"+name)
	if i < 0 || i+1 == len(args) {
		t.Fatalf("%s: no --%s VALUE", what, name)
	}
	return args[i+1]
}

func TestSystemdUnits(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("systemd", "*.service"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no units in systemd/ (%v)", err)
	}
	units := map[string]unit{}
	cmds := map[string][]string{}
	for _, f := range files {
		name := filepath.Base(f)
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u, err := parseUnit(data)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		units[name] = u
		u.one(t, name, "Unit", "Description")
		u.one(t, name, "Install", "WantedBy")
		cmd := strings.Fields(u.one(t, name, "Service", "ExecStart"))
		cmds[name] = cmd
		switch cmd[0] {
		case faasnetPath:
			sub := cmd[1:2]
			if _, err := faasnetFlags(t, sub); err != nil && notYet[name] {
				t.Logf("%s: %v; its command line is checked once it exists", name, err)
				continue
			}
			checkFaasnetArgs(t, name, cmd[1:], false)
		case "/usr/bin/etcd":
			known := etcdFlags(t)
			for _, a := range cmd[1:] {
				if flag, ok := strings.CutPrefix(a, "--"); ok && !known[flag] {
					t.Errorf("%s: etcd does not take %s", name, a)
				}
			}
		default:
			t.Errorf("%s: runs %s, neither %s nor Debian's etcd", name, cmd[0], faasnetPath)
		}
	}
	for _, want := range []string{"faasnet-manager.service", "faasnet-worker.service", "faasnet-snapshotter.service", "faasnet-etcd.service"} {
		if units[want] == nil {
			t.Fatalf("no unit %s", want)
		}
	}

	// The directories the flags name are the ones systemd makes.
	stateDir := func(name string) string {
		return "/var/lib/" + units[name].one(t, name, "Service", "StateDirectory")
	}
	mgr, etcd, worker := cmds["faasnet-manager.service"], cmds["faasnet-etcd.service"], cmds["faasnet-worker.service"]
	if got, want := unitFlag(t, "manager", mgr, "data"), stateDir("faasnet-manager.service"); got != want {
		t.Errorf("manager: --data %s, its StateDirectory is %s", got, want)
	}
	if got, want := unitFlag(t, "etcd", etcd, "data-dir"), stateDir("faasnet-etcd.service"); got != want {
		t.Errorf("etcd: --data-dir %s, its StateDirectory is %s", got, want)
	}
	clientURL := unitFlag(t, "etcd", etcd, "listen-client-urls")
	if u, err := url.Parse(clientURL); err != nil || u.Hostname() != "127.0.0.1" {
		t.Errorf("etcd: --listen-client-urls %s, want loopback only: etcd holds the CA key", clientURL)
	}
	if got := unitFlag(t, "manager", mgr, "etcd"); got != clientURL {
		t.Errorf("manager: --etcd %s, etcd serves %s", got, clientURL)
	}
	if got := unitFlag(t, "worker", worker, "oci-listen"); got != containerdcfg.DefaultWorker {
		t.Errorf("worker: --oci-listen %s, but faasnet containerd config points containerd at %s by default", got, containerdcfg.DefaultWorker)
	}
	for _, flag := range []string{"cache", "cert-dir", "run-dir"} {
		if got, dir := unitFlag(t, "worker", worker, flag), stateDir("faasnet-worker.service"); !strings.HasPrefix(got, dir+"/") {
			t.Errorf("worker: --%s %s is not under its StateDirectory %s", flag, got, dir)
		}
	}
	run := "/run/" + units["faasnet-snapshotter.service"].one(t, "snapshotter", "Service", "RuntimeDirectory")
	if sock := containerdcfg.DefaultSnapshotterSocket; filepath.Dir(sock) != run {
		t.Errorf("snapshotter: RuntimeDirectory %s, but containerd is configured for %s", run, sock)
	}
	sn := cmds["faasnet-snapshotter.service"]
	if got := unitFlag(t, "snapshotter", sn, "socket"); got != containerdcfg.DefaultSnapshotterSocket {
		t.Errorf("snapshotter: --socket %s, but faasnet containerd config declares %s by default", got, containerdcfg.DefaultSnapshotterSocket)
	}
	if got, want := unitFlag(t, "snapshotter", sn, "worker"), unitFlag(t, "worker", worker, "oci-listen"); got != want {
		t.Errorf("snapshotter: --worker %s, the worker's --oci-listen is %s", got, want)
	}
	if got, dir := unitFlag(t, "snapshotter", sn, "root"), stateDir("faasnet-snapshotter.service"); !strings.HasPrefix(got, dir+"/") {
		t.Errorf("snapshotter: --root %s is not under its StateDirectory %s", got, dir)
	}
	// containerd mounts over the snapshotter's FUSE mounts: the unit must
	// not get a mount namespace of its own.
	for _, key := range []string{"PrivateTmp", "PrivateMounts", "ProtectSystem", "ProtectHome", "ReadWritePaths", "TemporaryFileSystem"} {
		if vs := units["faasnet-snapshotter.service"]["Service"][key]; len(vs) > 0 {
			t.Errorf("snapshotter: %s=%s gives it a mount namespace of its own, which containerd cannot see into", key, vs[0])
		}
	}
	checkSystemdVerify(t, files)
}

// checkSystemdVerify has systemd itself check the units: `systemd-analyze
// verify` reports unknown keys, bad values and missing programs, as
// warnings, so any output fails.
func checkSystemdVerify(t *testing.T, files []string) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		// testenv.NeedTool would name a package systemd-analyze.
		if testenv.InCI() {
			t.Fatal("systemd-analyze not installed (apt-get install systemd); CI=true provides every tool, so this fails instead of skipping")
		}
		t.Skip("systemd-analyze not installed (apt-get install systemd); skipping systemd's own check of the units")
	}
	testenv.NeedTool(t, "etcd") // the etcd unit's program must exist
	bin := testenv.Faasnet(t)
	dir := t.TempDir()
	var paths []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// systemd checks that the program exists: point it at the built one.
		data = bytes.ReplaceAll(data, []byte(faasnetPath), []byte(bin))
		p := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
