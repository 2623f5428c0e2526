package main

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

var (
	getRoot    = []byte("GET / HTTP/1.1\r\n")
	getHealthz = []byte("GET /healthz HTTP/1.1\r\n")
	endOfHead  = []byte("\r\n\r\n")
)

// parse answers or queues the complete requests in c.in, up to the first
// GET / (whose answer the rest waits for) or the first request the loop
// does not serve.
func (l *loop) parse(c *lconn, now time.Time) {
	// A stopping loop answers what it has read and serves nothing more:
	// its answers say Connection: close, and a client that heeds that sends
	// the rest again elsewhere, so serving it here could count it twice.
	for !c.waits && !c.handoff && !c.closed && !l.stopping.Load() && len(c.in) > 0 {
		end := bytes.Index(c.in, endOfHead)
		if end < 0 {
			// A head longer than the loop reads, or one that ends with
			// bare LFs, is fasthttp's to judge.
			if len(c.in) >= maxHead || bytes.Contains(c.in, []byte("\n\n")) {
				c.handoff = true
				l.markDirty(c)
			}
			return
		}
		head := c.in[:end+2]
		switch {
		case end+4 > maxHead || !plainHeaders(head):
			c.handoff = true
		case bytes.HasPrefix(head, getRoot):
			c.waits, c.start = true, now
			l.waiting = append(l.waiting, c)
		case bytes.HasPrefix(head, getHealthz):
			c.out = l.appendResponse(c.out, "200 OK", "ok\n", nil)
		default:
			c.handoff = true
		}
		if c.handoff {
			l.markDirty(c)
			return
		}
		c.in = c.in[end+4:]
		if len(c.in) == 0 {
			c.in = reuse(c.in)
		} else {
			c.readSince = now
		}
		l.markDirty(c)
	}
}

// plainHeaders reports whether the loop may serve a request with these
// header lines: each a token, a colon and a value with no control character
// but tab, exactly one Host, and nothing the loop does not do (a body,
// Connection handling, Expect, Upgrade). head ends with the last header
// line's CRLF. Anything else goes to fasthttp, which answers it or rejects
// it with 400: the loop must never read a request otherwise than fasthttp
// would, or a front end and the app could disagree on where one ends.
func plainHeaders(head []byte) bool {
	hosts := 0
	rest := head[bytes.Index(head, crlf)+2:]
	for len(rest) > 0 {
		j := bytes.Index(rest, crlf)
		line := rest[:j]
		rest = rest[j+2:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false
		}
		name := line[:colon]
		for _, b := range name {
			if !isTokenChar(b) {
				return false
			}
		}
		for _, b := range line[colon+1:] {
			if (b < ' ' && b != '\t') || b == 0x7f {
				return false
			}
		}
		if bytes.EqualFold(name, []byte("Host")) {
			hosts++
		}
		for _, u := range unplainHeaders {
			if bytes.EqualFold(name, u) {
				return false
			}
		}
	}
	return hosts == 1
}

var crlf = []byte("\r\n")

// isTokenChar reports whether b may be part of a header name (RFC 9110's
// tchar).
func isTokenChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

var unplainHeaders = [][]byte{
	[]byte("Content-Length"), []byte("Transfer-Encoding"), []byte("Connection"),
	[]byte("Expect"), []byte("Upgrade"), []byte("TE"), []byte("Trailer"),
}

// reuse empties b, keeping its array unless it grew large.
func reuse(b []byte) []byte {
	if cap(b) > keepCap {
		return nil
	}
	return b[:0]
}

// appendResponse appends an answer in the shape fasthttp gives (run.go sets
// no Server header); body is text, or raw when text is empty.
func (l *loop) appendResponse(b []byte, status, text string, raw []byte) []byte {
	n := len(text) + len(raw)
	b = append(b, "HTTP/1.1 "...)
	b = append(b, status...)
	b = append(b, "\r\nDate: "...)
	b = append(b, l.date...)
	b = append(b, "\r\nContent-Type: "+textPlain+"\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(n), 10)
	if l.stopping.Load() {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	b = append(b, text...)
	return append(b, raw...)
}
