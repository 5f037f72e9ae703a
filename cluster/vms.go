package cluster

import (
	"fmt"
	"net"
	"sync"
)

// vmHost returns the loopback IP of VM i, from 127.1.0.1 on, 250 per /24
// (then 127.2.0.1 after 64000 VMs),
// so that each emulated VM has an address of its own in trees, logs and
// connection tables. Where only 127.0.0.1 can be bound (macOS without
// aliases), every VM shares it.
func vmHost(i int) string {
	if !ownLoopback() {
		return "127.0.0.1"
	}
	return fmt.Sprintf("127.%d.%d.%d", 1+i/(250*256), (i/250)%256, 1+i%250)
}

var ownLoopback = sync.OnceValue(func() bool {
	ln, err := net.Listen("tcp", "127.1.0.1:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
})

// makeVMs names n VMs vm-000, vm-001, ...
func makeVMs(n int) []VM {
	vms := make([]VM, n)
	width := max(3, len(fmt.Sprint(n-1)))
	for i := range vms {
		vms[i] = VM{Name: fmt.Sprintf("vm-%0*d", width, i), Host: vmHost(i)}
	}
	return vms
}

// listen opens a listener on vm's IP, any port.
func listen(vm VM) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(vm.Host, "0"))
	if err != nil {
		return nil, fmt.Errorf("%s: listening on %s: %w", vm.Name, vm.Host, err)
	}
	return ln, nil
}

// dialer returns a dialer whose connections leave from vm's IP.
func dialer(vm VM) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(vm.Host)}}
}
