package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/kodekloud/counter/internal/welcome"
)

// countingIncr hands out numbers from memory and counts them.
type countingIncr struct{ n atomic.Int64 }

func (c *countingIncr) Incr() (int64, error) { return c.n.Add(1), nil }

type pong struct{}

func (pong) Ping(context.Context) *redis.StatusCmd { return redis.NewStatusResult("PONG", nil) }

// byteConn is a connection whose client sent in and then shut its side: the
// server reads in, then EOF, and what it writes is kept.
type byteConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *byteConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *byteConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *byteConn) Close() error                { return nil }
func (c *byteConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080} }
func (c *byteConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *byteConn) SetDeadline(time.Time) error      { return nil }
func (c *byteConn) SetReadDeadline(time.Time) error  { return nil }
func (c *byteConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzServe sends any bytes to the app's server, its routes and its limits as
// they run, and holds it to what a client relies on: it answers in
// well-formed HTTP/1.1, and counts exactly one visit for each answer that
// carries a count, never for a refused request. The seeds are the requests
// that broke the hand-written server this one replaced.
func FuzzServe(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET /\r\n\r\n",
		"XYZ\r\n\r\n",
		"GET / HTTP/1.1\r\nHost:\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.com/@x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\nHost: t\n\n",
		"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
		"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
		"GET /%2e%2e/ HTTP/1.1\r\nHost: t\r\n\r\n",
		"GET http://evil/ HTTP/1.1\r\nHost: t\r\n\r\n",
		"G\x00T / HTTP/1.1\r\nHost: t\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if bytes.Contains(in, []byte("HEAD")) {
			// An answer to HEAD has no body whatever its Content-Length
			// says, which only the request can tell a reader of answers.
			t.Skip()
		}
		visits := &countingIncr{}
		reg := prometheus.NewRegistry()
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		h := newHandler(visits, pong{}, time.Second, newMetrics(reg), reg, log)
		srv := newServer(h.serve, log)
		c := &byteConn{in: bytes.NewReader(in)}
		_ = srv.ServeConn(c)

		out := bufio.NewReader(bytes.NewReader(c.out.Bytes()))
		var counted int64
		for {
			if _, err := out.Peek(1); err == io.EOF {
				break
			}
			resp, err := http.ReadResponse(out, nil)
			if err != nil {
				t.Fatalf("the server's answer is not HTTP: %v\nsent %q\ngot %q", err, in, c.out.Bytes())
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("answer body: %v\nsent %q\ngot %q", err, in, c.out.Bytes())
			}
			if resp.ProtoMajor != 1 {
				t.Fatalf("answered in %s", resp.Proto)
			}
			if strings.HasPrefix(string(body), welcome.Prefix) {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("a count answered %d", resp.StatusCode)
				}
				counted++
			}
		}
		if n := visits.n.Load(); n != counted {
			t.Fatalf("%d visits counted, %d answers carry a count\nsent %q\ngot %q", n, counted, in, c.out.Bytes())
		}
	})
}

// FuzzPlainHostIsURLHost holds plainHost, the Host check's fast path, to
// net/url: every host it accepts, urlHost accepts too.
func FuzzPlainHostIsURLHost(f *testing.F) {
	for _, seed := range []string{"t", "example.com", "127.0.0.1:8080", "a:", ":80", "a:123456", "a.-.b:0", "[::1]:80", "a b", "evil.com/@x", "xn--d1a.com:65535"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, host string) {
		if plainHost([]byte(host)) && !urlHost(host) {
			t.Fatalf("plainHost accepts %q, net/url does not", host)
		}
	})
}
