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

	"github.com/kodekloud/counter/internal/testsupport/redistest"
)

// Exchanges on one raw connection: what the loop serves itself, what it
// hands to fasthttp, and the two on the same connection. Every answer must
// come in the order of its request, and the GET / answers must carry
// consecutive counts whichever server gave them.
func TestLoopAnswersInOrderAndHandsOverTheRest(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())

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
		// halfClose closes the client's sending side after the writes, as
		// nc -N does: what it asked must still be answered.
		halfClose bool
	}{
		{"pipelined", []string{root + healthz + root + root}, []string{"count", "200 ok\n", "count", "count"}, false, false},
		{"request in pieces", []string{"GET / HT", "TP/1.1\r\nHost: t\r", "\n\r\n"}, []string{"count"}, false, false},
		{"another route after GET / goes to fasthttp, GET / too from then on", []string{root, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n", root}, []string{"count", "200 ready\n", "count"}, false, false},
		{"handed over in pieces", []string{root + "HEAD /healthz HTTP/1.1\r\nHo", "st: t\r\n\r\n"}, []string{"count", "HEAD"}, false, false},
		{"Connection: close", []string{"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"}, []string{"count"}, true, false},
		{"HTTP/1.0", []string{"GET / HTTP/1.0\r\n\r\n"}, []string{"count"}, true, false},
		{"a body", []string{"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" + healthz}, []string{"count", "200 ok\n"}, false, false},
		{"POST", []string{"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"}, []string{"405 405 method not allowed\n"}, false, false},
		{"header block over 4 KiB", []string{"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + strings.Repeat("b", 5000) + "\r\n\r\n"}, []string{"431 "}, true, false},
		{"unknown path", []string{"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n" + root}, []string{"404 404 page not found\n", "count"}, false, false},
		{"half-closed after GET /", []string{root}, []string{"count"}, true, true},
		{"half-closed after a pipeline", []string{root + healthz + root}, []string{"count", "200 ok\n", "count"}, true, true},
	}
	last := int64(0)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialApp(t, a.url)
			for i, w := range tt.writes {
				if i > 0 {
					time.Sleep(20 * time.Millisecond)
				}
				if _, err := io.WriteString(c, w); err != nil {
					t.Fatal(err)
				}
			}
			if tt.halfClose {
				if err := c.(*net.TCPConn).CloseWrite(); err != nil {
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
	rdb := redistest.Start(t)
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
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	c := dialApp(t, a.url)
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

// The loop serves a request only if fasthttp would read it the same way;
// anything odd goes to fasthttp. So the same bytes must get the same
// answers, status for status, whether the loop sees them first or a
// connection fasthttp already serves does. A request the two parsed
// differently (where it ends, whether it has a body) is how a front end
// and the app come to disagree on what a connection carries.
func TestLoopAnswersOddRequestsAsFasthttpDoes(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	a := startApp(t, rdb.Addr())
	// A second request, or part of the first one's body: the question.
	const smuggled = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
	tests := []struct{ name, raw string }{
		{"plain", "GET / HTTP/1.1\r\nHost: t\r\n\r\n"},
		{"bare LF before Content-Length", "GET / HTTP/1.1\r\nHost: t\nContent-Length: 18\r\n\r\n" + smuggled},
		{"bare LF line ends", "GET / HTTP/1.1\nHost: t\n\n"},
		{"bare CR", "GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n"},
		{"space before the colon", "GET / HTTP/1.1\r\nHost: t\r\nContent-Length : 18\r\n\r\n" + smuggled},
		{"tab before the colon", "GET / HTTP/1.1\r\nHost: t\r\nContent-Length\t: 18\r\n\r\n" + smuggled},
		{"folded header", "GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n Content-Length: 18\r\n\r\n" + smuggled},
		{"no Host", "GET / HTTP/1.1\r\n\r\n"},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n"},
		{"NUL in a value", "GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n"},
		{"lower-case method", "get / HTTP/1.1\r\nHost: t\r\n\r\n"},
		{"query", "GET /?a=1 HTTP/1.1\r\nHost: t\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loop := exchange(t, a.url, "", tt.raw)
			full := exchange(t, a.url, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", tt.raw)
			if loop != full {
				t.Errorf("answers differ:\nfirst on the connection: %s\nafter a hand-over:       %s", loop, full)
			}
		})
	}
}

// exchange sends first (whose one answer it skips) and then raw on a new
// connection, and describes the answers that come back and how the
// connection ends.
func exchange(t *testing.T, url, first, raw string) string {
	t.Helper()
	c := dialApp(t, url)
	br := bufio.NewReader(c)
	if first != "" {
		if _, err := io.WriteString(c, first); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				got = append(got, "(open)")
			case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
				got = append(got, "(closed)")
			default:
				got = append(got, "(error: "+err.Error()+")")
			}
			return strings.Join(got, " ")
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got = append(got, resp.Status)
	}
}

// A stopping app answers the GET / it has sent to Redis, with Connection:
// close, and serves nothing more from that connection: the client sends the
// rest again elsewhere, so counting it here would count it twice.
func TestShutdownServesNothingAfterItsLastAnswer(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	p := startProxy(t, rdb.Addr())
	a := startApp(t, p.addr())
	c := dialApp(t, a.url)

	held := p.hold()
	root := "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
	if _, err := io.WriteString(c, root+root+root); err != nil {
		t.Fatal(err)
	}
	<-held
	a.stop()
	time.Sleep(100 * time.Millisecond) // the loop sees the stop
	p.release()

	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || parseCount(t, string(body)) != 1 || !resp.Close {
		t.Errorf("answer: %s %q, Connection: close %v; want 200, count 1 and Connection: close", resp.Status, body, resp.Close)
	}
	if resp, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("a second answer after Connection: close: %s", resp.Status)
	}
	if v, _ := rdb.Get(counterKey); v != "1" {
		t.Errorf("redis %s = %q, want 1: the pipelined GET /s after the last answer were counted", counterKey, v)
	}
}

// The loop reads at most maxBuffered of what it cannot answer yet. A client
// that pipelines behind a GET / whose INCRBY is held, without reading,
// soon finds the app no longer reading it; unbounded, the loop would read
// all of it into memory.
func TestLoopStopsReadingWhatItCannotAnswerYet(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	p := startProxy(t, rdb.Addr())
	a := startApp(t, p.addr())
	c := dialApp(t, a.url)
	held := p.hold()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-held

	// Far more than the loop's bound and the kernel's buffers on both
	// sides (at most a few MiB on loopback while nobody reads).
	const total = 64 << 20
	chunk := []byte(strings.Repeat("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 2000))
	_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	sent := 0
	for sent < total {
		n, err := c.Write(chunk)
		sent += n
		if err != nil {
			break
		}
	}
	if sent >= total {
		t.Errorf("the app read all %d MiB a client sent behind a GET / it could not answer", total>>20)
	}
	t.Logf("the app stopped reading after %.1f MiB (the kernel's buffers included)", float64(sent)/(1<<20))
	p.release()
}
