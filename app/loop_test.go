package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kodekloud/counter/internal/testredis"
)

// Exchanges on one raw connection: what the loop serves itself, what it
// hands to fasthttp, and the two on the same connection. Every answer must
// come in the order of its request, and the GET / answers must carry
// consecutive counts whichever server gave them.
func TestLoopAnswersInOrderAndHandsOverTheRest(t *testing.T) {
	t.Parallel()
	rdb := testredis.Start(t)
	a := startApp(t, rdb.Addr())
	addr := strings.TrimPrefix(a.url, "http://")

	const (
		root    = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
		healthz = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
	)
	// A want is "count" (the next count), "HEAD" (an empty 200 to HEAD),
	// or a status code and body as "200 ok\n".
	tests := []struct {
		name   string
		writes []string // sent with a pause between them
		want   []string
		closes bool // the server closes the connection after the answers
	}{
		{"pipelined", []string{root + healthz + root + root}, []string{"count", "200 ok\n", "count", "count"}, false},
		{"request in pieces", []string{"GET / HT", "TP/1.1\r\nHost: t\r", "\n\r\n"}, []string{"count"}, false},
		{"another route after GET / goes to fasthttp, GET / too from then on", []string{root, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", root}, []string{"count", "200 ready\n", "count"}, false},
		{"handed over in pieces", []string{root + "HEAD /healthz HTTP/1.1\r\nHo", "st: t\r\n\r\n"}, []string{"count", "HEAD"}, false},
		{"Connection: close", []string{"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"}, []string{"count"}, true},
		{"HTTP/1.0", []string{"GET / HTTP/1.0\r\n\r\n"}, []string{"count"}, true},
		{"a body", []string{"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" + healthz}, []string{"count", "200 ok\n"}, false},
		{"POST", []string{"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"}, []string{"405 405 method not allowed\n"}, false},
		{"header block over 4 KiB", []string{"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + strings.Repeat("b", 5000) + "\r\n\r\n"}, []string{"431 "}, true},
		{"unknown path", []string{"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n" + root}, []string{"404 404 page not found\n", "count"}, false},
	}
	last := int64(0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			for i, w := range tt.writes {
				if i > 0 {
					time.Sleep(20 * time.Millisecond)
				}
				if _, err := io.WriteString(c, w); err != nil {
					t.Fatal(err)
				}
			}
			br := bufio.NewReader(c)
			for i, want := range tt.want {
				method := http.MethodGet
				if want == "HEAD" {
					method = http.MethodHead
				}
				resp, err := http.ReadResponse(br, &http.Request{Method: method})
				if err != nil {
					t.Fatalf("answer %d: %v", i+1, err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatalf("answer %d: %v", i+1, err)
				}
				got := strings.TrimSuffix(resp.Status, " "+http.StatusText(resp.StatusCode))
				switch want {
				case "count":
					n := parseCount(t, string(body))
					if resp.StatusCode != http.StatusOK || (last != 0 && n != last+1) {
						t.Errorf("answer %d: %s, count %d; want 200 and count %d", i+1, resp.Status, n, last+1)
					}
					last = n
				case "HEAD":
					if resp.StatusCode != http.StatusOK || len(body) != 0 {
						t.Errorf("answer %d: %s %q; want 200 and no body", i+1, resp.Status, body)
					}
				default:
					if g := got + " " + string(body); !strings.HasPrefix(g, want) {
						t.Errorf("answer %d: %q; want %q", i+1, g, want)
					}
				}
			}
			_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, err := br.Read(make([]byte, 1))
			switch closed := errors.Is(err, io.EOF); {
			case n > 0:
				t.Errorf("more than %d answers", len(tt.want))
			case closed != tt.closes:
				t.Errorf("connection closed after the answers: %v (%v), want %v", closed, err, tt.closes)
			}
		})
	}
}

// A client that writes many pipelined requests before it reads one answer
// fills the loop's buffers; the loop stops reading it, waits for it to read,
// and then goes on: every request gets its answer.
func TestLoopServesAPipelineLargerThanItsBuffers(t *testing.T) {
	t.Parallel()
	rdb := testredis.Start(t)
	a := startApp(t, rdb.Addr())
	// A small receive buffer, so the loop's writes soon find no room.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	c, err := d.Dial("tcp", strings.TrimPrefix(a.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))

	const n = 60000 // 2 MiB of requests, 7.5 MiB of answers: more than the socket buffers hold
	req := "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
	wrote := make(chan error, 1)
	go func() {
		// The answers are not read until every request is written.
		_, err := io.WriteString(c, strings.Repeat(req, n))
		wrote <- err
	}()
	time.Sleep(500 * time.Millisecond)
	br := bufio.NewReader(c)
	for i := range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d of %d: %v", i+1, n, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Fatalf("answer %d: %s %q", i+1, resp.Status, body)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// The loop's read timeout: a request that does not finish arriving is cut
// off, as fasthttp's ReadTimeout would.
func TestLoopClosesAnUnfinishedRequest(t *testing.T) {
	t.Parallel()
	rdb := testredis.Start(t)
	a := startApp(t, rdb.Addr())
	c, err := net.Dial("tcp", strings.TrimPrefix(a.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	n, err := c.Read(make([]byte, 1))
	took := time.Since(start)
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read %d bytes, %v; want the server to close the connection", n, err)
	}
	if took < readTimeout || took > readTimeout+2*time.Second {
		t.Errorf("closed after %v, want %v to %v", took.Round(time.Millisecond), readTimeout, readTimeout+2*time.Second)
	}
}
