package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/kodekloud/counter/internal/welcome"
)

// loadResult is what one load run measured.
type loadResult struct {
	OK, Failed int
	Counts     []int64 // the N of every 200 answer
	Latencies  []time.Duration
	Elapsed    time.Duration
}

func (r *loadResult) percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	slices.Sort(r.Latencies)
	return r.Latencies[min(len(r.Latencies)-1, int(float64(len(r.Latencies))*p))]
}

// answerPrefix is welcome.Prefix as bytes, to check answers as they are
// read.
var answerPrefix = []byte(welcome.Prefix)

// load sends GET path over conns keep-alive connections for d. With rate 0 it
// is a closed loop (each connection sends its next request when the answer
// arrives); with rate > 0 requests are scheduled at that total rate and each
// latency is measured from the scheduled time, so a stall is not hidden.
// Unlike wrk it waits for every request it sent and parses every answer: the
// exact count of successes is what the counter must equal. An answer to GET
// / must carry a count; to any other path, 200 is a success.
func load(addr, path string, conns int, rate float64, d time.Duration) (*loadResult, error) {
	var mu sync.Mutex
	total := &loadResult{}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	start := time.Now()
	deadline := start.Add(d)
	for i := range conns {
		wg.Go(func() {
			r, err := loadConn(addr, path, rate/float64(conns), start.Add(time.Duration(i)*time.Millisecond/time.Duration(conns)), deadline)
			if err != nil {
				errs <- err
			}
			mu.Lock()
			total.OK += r.OK
			total.Failed += r.Failed
			total.Counts = append(total.Counts, r.Counts...)
			total.Latencies = append(total.Latencies, r.Latencies...)
			mu.Unlock()
		})
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	close(errs)
	return total, <-errs
}

func loadConn(addr, path string, rate float64, first, deadline time.Time) (*loadResult, error) {
	r := &loadResult{}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return r, err
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: bench\r\n\r\n")
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}
	next := first
	for {
		sent := time.Now()
		if interval > 0 {
			if next.After(deadline) {
				return r, nil
			}
			time.Sleep(time.Until(next))
			sent = next
			next = next.Add(interval)
		} else if sent.After(deadline) {
			return r, nil
		}
		if _, err := c.Write(req); err != nil {
			return r, err
		}
		status, body, err := readResponse(br)
		if err != nil {
			return r, err
		}
		r.Latencies = append(r.Latencies, time.Since(sent))
		if status == 200 && path != "/" {
			r.OK++
			continue
		}
		if status != 200 || !bytes.HasPrefix(body, answerPrefix) {
			r.Failed++
			continue
		}
		n, err := strconv.ParseInt(string(body[len(answerPrefix):]), 10, 64)
		if err != nil {
			return r, fmt.Errorf("answer %q: %v", body, err)
		}
		r.OK++
		r.Counts = append(r.Counts, n)
	}
}

// readResponse reads one HTTP/1.1 response with a Content-Length body.
func readResponse(br *bufio.Reader) (int, []byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, nil, err
	}
	if len(line) < 12 {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	length := -1
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, nil, err
		}
		if len(h) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(h, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if length < 0 {
		return 0, nil, fmt.Errorf("response without Content-Length")
	}
	body := make([]byte, length)
	_, err = io.ReadFull(br, body)
	return status, body, err
}
