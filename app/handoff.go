package main

import (
	"net"
	"os"
	"sync"
	"syscall"
)

// handOver gives c, with what it has read of its next request, to fasthttp.
func (l *loop) handOver(c *lconn) {
	_ = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, c.fd, nil)
	delete(l.conns, c.fd)
	c.closed = true
	f := os.NewFile(uintptr(c.fd), "conn")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		l.log.Warn("hand-over failed", "err", err)
		return
	}
	l.handoff.give(&prefixConn{Conn: nc, pre: c.in})
}

// handoffListener is the listener fasthttp serves: its connections are the
// ones the loop hands over.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	// given counts the connections given and not yet accepted or closed,
	// so that shutdown can let fasthttp take them all before it stops.
	given sync.WaitGroup
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// give passes c to Accept without holding up the loop.
func (h *handoffListener) give(c net.Conn) {
	h.given.Add(1)
	go func() {
		defer h.given.Done()
		select {
		case h.conns <- c:
		case <-h.done:
			c.Close()
		}
	}()
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoffListener) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoffListener) Addr() net.Addr { return h.addr }

// prefixConn returns the bytes the loop had already read before the rest.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
