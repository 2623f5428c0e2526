package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// redisLink is the loop's own Redis connection, in the same epoll set as
// the clients': sending a batch costs a write, its reply a read, and no
// goroutine hand-off.
type redisLink struct {
	addr    string
	timeout time.Duration
	file    *os.File // nil while there is no connection
	fd      int
	cmd     []byte
	reply   []byte
	sentAt  time.Time // when the INCRBY that is out was sent
	dialing bool      // a goroutine is dialling; its result comes on dials
	dials   chan dialResult
}

type dialResult struct {
	c   net.Conn
	err error
}

// send sends the waiting GET /s as one INCRBY, once there is a connection
// to send it on.
func (l *loop) send(now time.Time) {
	r := &l.redis
	if r.file == nil {
		if !r.dialing {
			r.dialing = true
			go func() {
				c, err := net.DialTimeout("tcp", r.addr, r.timeout)
				r.dials <- dialResult{c, err}
				l.wake()
			}()
		}
		return
	}
	l.inflight, l.waiting = l.waiting, l.inflight[:0]
	r.cmd = appendIncrBy(r.cmd[:0], counterKey, int64(len(l.inflight)))
	r.sentAt = now
	// A few dozen bytes into an empty socket buffer: all of it is taken at
	// once, or the connection is of no use.
	if n, err := syscall.Write(r.fd, r.cmd); err != nil || n < len(r.cmd) {
		l.closeRedis()
		if err == nil {
			err = fmt.Errorf("short write (%d of %d bytes)", n, len(r.cmd))
		}
		l.answer(0, fmt.Errorf("redis %s: write: %w", r.addr, err), now)
	}
}

// dialed takes the result of a dial, if one has come.
func (l *loop) dialed(now time.Time) {
	r := &l.redis
	var d dialResult
	select {
	case d = <-r.dials:
	default:
		return
	}
	r.dialing = false
	if d.err == nil {
		d.err = l.useRedis(d.c)
		d.c.Close() // the loop keeps a duplicate of its descriptor
	}
	if d.err != nil {
		// The requests that waited for this dial fail, as they would
		// have on a connection that failed.
		l.inflight, l.waiting = l.waiting, l.inflight[:0]
		l.answer(0, d.err, now)
	}
}

func (l *loop) useRedis(c net.Conn) error {
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		return err
	}
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		f.Close()
		return err
	}
	if err := syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
		f.Close()
		return err
	}
	l.redis.file, l.redis.fd, l.redis.reply = f, fd, l.redis.reply[:0]
	return nil
}

func (l *loop) closeRedis() {
	if l.redis.file != nil {
		_ = syscall.EpollCtl(l.ep, syscall.EPOLL_CTL_DEL, l.redis.fd, nil)
		l.redis.file.Close()
		l.redis.file = nil
	}
}

// readRedis reads the reply to the INCRBY that is out.
func (l *loop) readRedis(now time.Time) {
	r := &l.redis
	n, err := syscall.Read(r.fd, l.buf)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
		return
	}
	if err == nil && n == 0 {
		err = errors.New("connection closed by Redis")
	}
	if err == nil && len(l.inflight) == 0 {
		err = fmt.Errorf("unexpected %q with no command out", l.buf[:n])
	}
	if err != nil {
		// Redis restarted, or timed out an idle client: the next batch
		// dials again.
		l.closeRedis()
		if len(l.inflight) > 0 {
			l.answer(0, fmt.Errorf("redis %s: read: %w", r.addr, err), now)
		}
		return
	}
	r.reply = append(r.reply, l.buf[:n]...)
	i := bytes.IndexByte(r.reply, '\n')
	if i < 0 {
		if len(r.reply) > 512 {
			l.closeRedis()
			l.answer(0, fmt.Errorf("redis %s: reply too long: %q...", r.addr, r.reply[:64]), now)
		}
		return
	}
	end, err := parseIncrReply(r.reply[:i+1])
	if len(r.reply) > i+1 && err == nil {
		err = fmt.Errorf("redis %s: more than one reply: %q", r.addr, r.reply)
	}
	r.reply = r.reply[:0]
	if err != nil && !errors.As(err, new(redisError)) {
		l.closeRedis()
	}
	l.answer(end, err, now)
}

// answer answers the GET /s of the INCRBY that came back: with INCRBY k
// answering end, they own end-k+1..end, in the order they were read.
func (l *loop) answer(end int64, err error, now time.Time) {
	k := int64(len(l.inflight))
	if err != nil {
		l.log.Error("redis INCRBY failed", "key", counterKey, "requests", k, "err", err)
	}
	var body [64]byte
	for i, c := range l.inflight {
		l.inflight[i] = nil
		if err != nil {
			l.h.m.redisErrors.Inc()
			l.h.err503.Inc()
		} else {
			l.h.ok200.Inc()
		}
		l.h.rootDuration.Observe(now.Sub(c.start).Seconds())
		if c.closed {
			continue
		}
		c.waits = false
		if err != nil {
			c.out = l.appendResponse(c.out, "503 Service Unavailable", unavailableText, nil)
		} else {
			c.out = l.appendResponse(c.out, "200 OK", "", strconv.AppendInt(append(body[:0], welcomeText...), end-k+1+int64(i), 10))
		}
		l.markDirty(c)
		l.parse(c, now)
	}
	l.inflight = l.inflight[:0]
}
