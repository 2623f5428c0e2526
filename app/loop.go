package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// loop serves the two requests that make nearly all of the app's traffic,
// a plain keep-alive GET / or GET /healthz, from one epoll loop on one
// thread, as Redis serves its clients. Each turn of the loop reads every
// connection that is ready, sends the GET /s it found as one INCRBY (while
// the previous one is out, they wait for the next), and writes every answer
// that is ready. A request costs the loop a read and a write and no
// goroutine of its own, so counting costs little over serving: on the make
// bench machine (2 cores shared with wrk and Redis) GET / served 0.71x of
// /healthz with fasthttp's goroutine per connection, parked on its number,
// and about 1x from this loop.
//
// Everything else, from the first request that is not one of those two on
// (another route or method, HEAD, a body, a Connection header, HTTP/1.0, a
// header block over maxHead), is handed with its connection to the fasthttp
// server, which serves that connection from then on: its timeouts, limits
// and errors stay those of a full HTTP server.
type loop struct {
	h   *handler
	log *slog.Logger

	ln       net.Listener // closed on stop, with lfd, so new connections are refused
	lfile    *os.File
	ep, lfd  int
	wakeR    int // a finished dial and stop wake the loop through this pipe
	wakeMu   sync.Mutex
	wakeW    int // -1 once closed
	conns    map[int]*lconn
	waiting  []*lconn // GET /s for the next INCRBY, in the order read
	inflight []*lconn // the GET /s of the INCRBY that is out
	dirty    []*lconn // connections with answers to write
	handoff  *handoffListener
	redis    redisLink
	// draining is closed when the loop has seen stop: from then on it
	// hands nothing more to fasthttp.
	draining   chan struct{}
	stopping   atomic.Bool
	aborting   atomic.Bool // the shutdown deadline has passed: close everything
	listenOpen bool
	// acceptPaused is when accepting stopped for want of file
	// descriptors; the next sweep after a second starts it again.
	acceptPaused time.Time
	date         []byte
	buf          []byte
}

// lconn is one connection the loop serves.
type lconn struct {
	fd      int
	in, out []byte
	// waits is set while a GET / of this connection waits for its number;
	// later requests on the connection wait behind it, so answers go out
	// in the order the requests came.
	waits      bool
	start      time.Time // when the waiting GET / was read
	readSince  time.Time // when the unfinished request in in began to arrive
	writeSince time.Time // when out first could not be written in full
	lastActive time.Time
	dirty      bool
	stuck      bool   // the last write of out did not take all of it
	events     uint32 // what epoll reports for this connection
	handoff    bool   // hand over to fasthttp once out is written
	// eof is set once the client has sent all it will (a half-close, as
	// nc -N does): what it asked is still answered, then it is closed.
	eof bool
	// lingerUntil is set while the loop, stopping, has sent its FIN and
	// reads and drops what the client still sends (see shut).
	lingerUntil time.Time
	closed      bool
}

const (
	// maxHead is the longest header block the loop reads; a longer one goes
	// to fasthttp, which answers 431 above its own 4 KiB limit.
	maxHead = 4096
	// maxBuffered bounds what a connection may have read and not yet
	// answered, or have to write: past it the loop stops reading it, so a
	// client that pipelines and does not read its answers cannot grow
	// either buffer without bound.
	maxBuffered = 64 << 10
	// keepCap is the largest buffer a connection keeps between requests.
	keepCap = 4 << 10
	// lingerTime bounds how long a stopping loop reads and drops what a
	// client still sends after the loop's last answer.
	lingerTime = 500 * time.Millisecond
)

// newLoop takes over ln's socket; handed-off connections come out of
// l.handoff, for fasthttp's Serve.
func newLoop(ln net.Listener, h *handler, log *slog.Logger, redisAddr string, redisTimeout time.Duration) (*loop, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("listener %T is not TCP", ln)
	}
	lfile, err := tl.File()
	if err != nil {
		return nil, err
	}
	l := &loop{
		h: h, log: log, ln: ln, lfile: lfile, lfd: int(lfile.Fd()),
		conns:    make(map[int]*lconn),
		handoff:  newHandoffListener(ln.Addr()),
		draining: make(chan struct{}),
		redis:    redisLink{addr: redisAddr, timeout: redisTimeout, dials: make(chan dialResult, 1)},
		buf:      make([]byte, 64<<10),
		// Unset until made: 0 is a descriptor like any other.
		ep: -1, wakeR: -1, wakeW: -1,
		date: time.Now().UTC().AppendFormat(nil, http.TimeFormat),
	}
	fail := func(err error) (*loop, error) {
		l.closeFDs()
		return nil, err
	}
	if err := syscall.SetNonblock(l.lfd, true); err != nil {
		return fail(err)
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		return fail(err)
	}
	l.wakeR, l.wakeW = p[0], p[1]
	if l.ep, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		return fail(err)
	}
	for _, fd := range []int{l.lfd, l.wakeR} {
		if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
			return fail(err)
		}
	}
	l.listenOpen = true
	return l, nil
}

func (l *loop) closeFDs() {
	l.lfile.Close()
	l.wakeMu.Lock()
	defer l.wakeMu.Unlock()
	for _, fd := range []int{l.wakeR, l.wakeW, l.ep} {
		if fd >= 0 {
			syscall.Close(fd)
		}
	}
	// A late wake must not write to a descriptor number that has been
	// given to a new connection since.
	l.wakeW = -1
}

// stop makes the loop refuse new connections, answer the requests it has,
// and return once every connection it holds is closed.
func (l *loop) stop() {
	l.stopping.Store(true)
	l.wake()
}

// abort makes a stopping loop return at once, closing what it still holds:
// the shutdown deadline has passed.
func (l *loop) abort() {
	l.aborting.Store(true)
	l.stop()
}

func (l *loop) wake() {
	l.wakeMu.Lock()
	defer l.wakeMu.Unlock()
	if l.wakeW >= 0 {
		_, _ = syscall.Write(l.wakeW, []byte{1})
	}
}

// run serves until stop has drained every connection.
func (l *loop) run() error {
	defer func() {
		if l.redis.dialing {
			if r := <-l.redis.dials; r.c != nil {
				r.c.Close()
			}
		}
		l.closeRedis()
		for _, c := range l.conns {
			l.close(c)
		}
		if l.listenOpen {
			l.ln.Close()
		}
		l.closeFDs()
	}()

	events := make([]syscall.EpollEvent, 256)
	nextSweep := time.Now().Add(time.Second)
	for {
		wake := nextSweep
		if len(l.inflight) > 0 {
			wake = minTime(wake, l.redis.sentAt.Add(l.redis.timeout))
		}
		n, err := syscall.EpollWait(l.ep, events, int(max(time.Until(wake)/time.Millisecond+1, 0)))
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		now := time.Now()
		for _, ev := range events[:max(n, 0)] {
			switch fd := int(ev.Fd); {
			case fd == l.lfd && l.listenOpen:
				// (Once closed, its number may be a new Redis connection's.)
				l.accept(now)
			case fd == l.wakeR:
				for {
					if _, err := syscall.Read(l.wakeR, l.buf); err != nil {
						break
					}
				}
				l.dialed(now)
			case l.redis.file != nil && fd == l.redis.fd:
				l.readRedis(now)
			default:
				c := l.conns[fd]
				if c == nil {
					continue
				}
				if ev.Events&syscall.EPOLLOUT != 0 {
					l.markDirty(c)
				}
				switch {
				case c.eof && ev.Events&(syscall.EPOLLHUP|syscall.EPOLLERR) != 0:
					// Gone both ways: nothing more can be delivered.
					l.close(c)
				case ev.Events&(syscall.EPOLLIN|syscall.EPOLLHUP|syscall.EPOLLERR) != 0:
					l.read(c, now)
				}
			}
		}
		if len(l.inflight) > 0 && now.Sub(l.redis.sentAt) >= l.redis.timeout {
			// A reply that comes later must not be taken for the next
			// batch's.
			l.closeRedis()
			l.answer(0, fmt.Errorf("redis %s: no reply within %v", l.redis.addr, l.redis.timeout), now)
		}
		// A send that fails answers its batch at once, and those answers
		// may let pipelined GET /s queue: send them this turn too.
		for len(l.inflight) == 0 && len(l.waiting) > 0 && !l.redis.dialing {
			l.send(now)
		}
		l.flush(now)
		if now.After(nextSweep) {
			l.sweep(now)
			// While stopping, often enough to end lingering connections
			// on time.
			nextSweep = now.Add(time.Second)
			if l.stopping.Load() {
				nextSweep = now.Add(lingerTime / 5)
			}
		}
		if l.stopping.Load() {
			l.drain(now)
			if len(l.conns) == 0 && len(l.inflight) == 0 || l.aborting.Load() {
				return nil
			}
			nextSweep = minTime(nextSweep, now.Add(lingerTime/5))
		}
	}
}

func (l *loop) accept(now time.Time) {
	for {
		fd, _, err := syscall.Accept4(l.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EINTR) {
			continue
		}
		if errors.Is(err, syscall.EAGAIN) {
			return
		}
		if err != nil {
			// Out of file descriptors, say. The listener stays ready, so
			// the loop would spin on it: leave the new connections in the
			// backlog for a second instead.
			l.log.Warn("accept failed; accepting again in a second", "err", err)
			_ = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, l.lfd, nil)
			l.acceptPaused = now
			return
		}
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
			syscall.Close(fd)
			l.log.Warn("epoll_ctl failed", "err", err)
			continue
		}
		l.conns[fd] = &lconn{fd: fd, lastActive: now, events: syscall.EPOLLIN}
	}
}

func (l *loop) read(c *lconn, now time.Time) {
	n, err := syscall.Read(c.fd, l.buf)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
		return
	}
	switch {
	case !c.lingerUntil.IsZero():
		if err != nil || n == 0 {
			l.close(c)
		}
		return
	case err != nil:
		// Reset by the client: nothing can be delivered.
		l.close(c)
		return
	case n == 0:
		c.eof = true
		l.markDirty(c)
		return
	}
	if len(c.in) == 0 {
		c.readSince = now
	}
	c.in = append(c.in, l.buf[:n]...)
	c.lastActive = now
	l.parse(c, now)
	l.markDirty(c) // for watch, if the input is now over its bound
}

func (l *loop) markDirty(c *lconn) {
	if !c.dirty {
		c.dirty = true
		l.dirty = append(l.dirty, c)
	}
}

// flush writes what each dirty connection has to write, then hands it
// over or closes it if that is what it waited for.
func (l *loop) flush(now time.Time) {
	for i, c := range l.dirty {
		l.dirty[i] = nil
		c.dirty = false
		if c.closed {
			continue
		}
		c.stuck = false
		progress := false
		for len(c.out) > 0 {
			n, err := syscall.Write(c.fd, c.out)
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if errors.Is(err, syscall.EAGAIN) {
				c.stuck = true
				break
			}
			if err != nil {
				l.close(c)
				break
			}
			c.out = c.out[n:]
			progress = progress || n > 0
		}
		if c.closed {
			continue
		}
		if c.stuck {
			// The write timeout bounds a stall, as fasthttp's bounds one
			// answer, not a slow reader's whole backlog.
			if c.writeSince.IsZero() || progress {
				c.writeSince = now
			}
			l.watch(c)
			continue
		}
		c.out, c.writeSince = reuse(c.out), time.Time{}
		c.lastActive = now
		if len(c.in) > 0 {
			// The read timeout of a request that came in part while the
			// answers before it were stuck starts now, as fasthttp's
			// starts after it has written.
			c.readSince = now
		}
		switch {
		case c.waits || !c.lingerUntil.IsZero():
			l.watch(c)
		case l.stopping.Load():
			l.shut(c, now)
		case c.handoff:
			l.handOver(c)
		case c.eof:
			// Everything the client sent is answered; a request that
			// only partly came never will be.
			l.close(c)
		default:
			l.watch(c)
		}
	}
	l.dirty = l.dirty[:0]
}

// watch sets what epoll reports for c: input while c has room to buffer it,
// and room to write while an answer is stuck. In the usual exchange neither
// changes, and watch makes no system call.
func (l *loop) watch(c *lconn) {
	var ev uint32
	if !c.lingerUntil.IsZero() || (!c.eof && len(c.in) < maxBuffered && len(c.out) < maxBuffered) {
		ev |= syscall.EPOLLIN
	}
	if c.stuck {
		ev |= syscall.EPOLLOUT
	}
	if ev == c.events {
		return
	}
	if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_MOD, c.fd, &syscall.EpollEvent{Events: ev, Fd: int32(c.fd)}); err != nil {
		l.close(c)
		return
	}
	c.events = ev
}

func (l *loop) close(c *lconn) {
	if c.closed {
		return
	}
	c.closed = true
	delete(l.conns, c.fd)
	syscall.Close(c.fd)
}

// sweep applies the timeouts and renews the Date header, once a second.
func (l *loop) sweep(now time.Time) {
	l.date = now.UTC().AppendFormat(l.date[:0], http.TimeFormat)
	if !l.acceptPaused.IsZero() && now.Sub(l.acceptPaused) >= time.Second && l.listenOpen {
		l.acceptPaused = time.Time{}
		if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, l.lfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.lfd)}); err != nil {
			l.log.Error("listening again failed", "err", err)
		}
	}
	for _, c := range l.conns {
		switch {
		case !c.lingerUntil.IsZero():
			if now.After(c.lingerUntil) {
				l.close(c)
			}
		case c.waits:
			// The Redis timeout bounds this wait.
		case len(c.out) > 0:
			if now.Sub(c.writeSince) > writeTimeout {
				l.close(c)
			}
		case len(c.in) > 0:
			if now.Sub(c.readSince) > readTimeout {
				l.close(c)
			}
		case now.Sub(c.lastActive) > idleTimeout:
			l.close(c)
		}
	}
}

// drain, while stopping, closes the listener and ends every connection
// that has nothing left to answer.
func (l *loop) drain(now time.Time) {
	if l.listenOpen {
		l.listenOpen = false
		_ = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, l.lfd, nil)
		l.lfile.Close()
		l.ln.Close()
		close(l.draining)
	}
	for _, c := range l.conns {
		if !c.waits && len(c.out) == 0 {
			l.shut(c, now)
		}
	}
}

// shut ends c while the loop stops. Closing a socket that holds requests
// the loop has not read makes the kernel reset the connection, and the
// client may then lose answers it has not read yet; so the loop sends its
// FIN, reads and drops what still comes until the client closes too, and
// closes after lingerTime at the latest.
func (l *loop) shut(c *lconn, now time.Time) {
	if c.closed || !c.lingerUntil.IsZero() {
		return
	}
	if c.eof {
		l.close(c)
		return
	}
	if err := syscall.Shutdown(c.fd, syscall.SHUT_WR); err != nil {
		l.close(c)
		return
	}
	c.lingerUntil, c.in = now.Add(lingerTime), nil
	l.watch(c)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
