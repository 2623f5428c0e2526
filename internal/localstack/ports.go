package localstack

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// fill gives every zero port a free loopback port. With a reserved block
// (MinDynamic..MaxDynamic from ReserveDynamicRange) the ports come from the
// start of the block, which then shrinks to leave the rest to Nomad's
// allocations: a block is held by flock and lies below the kernel's
// ephemeral range, so neither another stack starting at the same moment nor
// an outgoing connection can take a port between this pick and the agent's
// bind, as they can with a port picked by listening on :0.
func (p *Ports) fill() error {
	next := p.MinDynamic
	for _, port := range []*int{
		&p.NomadHTTP, &p.NomadRPC, &p.NomadSerf,
		&p.ConsulHTTP, &p.ConsulServer, &p.ConsulSerfLAN, &p.ConsulSerfWAN,
		&p.Redis, &p.Registry, &p.ConsulDNS, &p.FrontDoorStats, &p.Prometheus,
	} {
		if *port != 0 {
			continue
		}
		if next != 0 {
			for inUse(next) {
				next++
			}
			*port = next
			next++
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("find a free port: %w", err)
		}
		*port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	if next != 0 {
		if next+100 > p.MaxDynamic {
			return fmt.Errorf("port block %d-%d leaves fewer than 100 ports for allocations", p.MinDynamic, p.MaxDynamic)
		}
		p.MinDynamic = next
	}
	if p.MinDynamic == 0 {
		p.MinDynamic, p.MaxDynamic = 20000, 20999
	}
	return nil
}

// inUse reports whether something listens on 127.0.0.1:port.
func inUse(port int) bool { return listening(fmt.Sprintf("127.0.0.1:%d", port)) }

// listening reports whether something listens on addr (IP:PORT).
func listening(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// ReserveDynamicRange returns a block of ports that no other stack on this
// machine holds, for a stack's agents and its allocations (pass it as
// Ports.MinDynamic and MaxDynamic), and the func that gives it back. The
// hold is an flock, so a crashed holder frees its block. Blocks start at
// 21000; 20000-20999 is the `make up` stack's.
func ReserveDynamicRange() (minPort, maxPort int, release func(), err error) {
	dir := filepath.Join(os.TempDir(), "counter-stack-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, nil, err
	}
	const size = 500
	for block := range 20 {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("block-%d.lock", block)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return 0, 0, nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		lo := 21000 + block*size
		return lo, lo + size - 1, func() { f.Close() }, nil
	}
	return 0, 0, nil, fmt.Errorf("all 20 dynamic port blocks under %s are held by other stacks", dir)
}
