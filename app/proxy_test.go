package main

import (
	"io"
	"net"
	"sync"
	"testing"
)

// proxy is a TCP relay between the app and a real Redis that can hold the
// app's commands, to make Redis look slow at a moment the test chooses.
type proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	gate    chan struct{} // closed while commands flow; open while held
	arrived chan struct{} // closed when a held command arrives
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, gate: make(chan struct{})}
	close(p.gate)
	t.Cleanup(func() { p.release(); ln.Close() })
	go p.accept()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// hold stops commands from reaching Redis; the returned channel is closed
// when the first command arrives and is being held.
func (p *proxy) hold() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gate = make(chan struct{})
	p.arrived = make(chan struct{})
	return p.arrived
}

// release lets held and later commands through.
func (p *proxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.relay(c)
	}
}

func (p *proxy) relay(c net.Conn) {
	defer c.Close()
	r, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer r.Close()
	go func() { _, _ = io.Copy(c, r); c.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			select {
			case <-gate:
			default:
				select {
				case <-p.arrived:
				default:
					close(p.arrived)
				}
			}
			p.mu.Unlock()
			<-gate
			if _, werr := r.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
