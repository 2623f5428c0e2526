package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// The replies a real Redis does not send to INCRBY; its own replies are
// covered by the tests that run the app against redis-server.
func TestIncrConnReplies(t *testing.T) {
	const sent = "*3\r\n$6\r\nINCRBY\r\n$12\r\nvisitorCount\r\n$2\r\n14\r\n"
	tests := []struct {
		name      string
		reply     string
		want      int64
		err       string // in the error; "" for none
		redisErr  bool
		keepsConn bool
	}{
		{name: "integer", reply: ":140\r\n", want: 140, keepsConn: true},
		{name: "negative", reply: ":-3\r\n", want: -3, keepsConn: true},
		{name: "error reply", reply: "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", err: "redis: WRONGTYPE Operation", redisErr: true, keepsConn: true},
		{name: "status reply", reply: "+OK\r\n", err: `unexpected reply "+OK\r\n" to INCRBY`},
		{name: "not a number", reply: ":12x\r\n", err: "malformed integer reply"},
		{name: "no CR", reply: ":140\n", err: "malformed reply"},
		{name: "cut short", reply: ":1", err: "i/o timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			got := make(chan string, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					got <- err.Error()
					return
				}
				defer c.Close()
				buf := make([]byte, len(sent))
				_, err = io.ReadFull(bufio.NewReader(c), buf)
				got <- string(buf)
				if err == nil {
					_, _ = io.WriteString(c, tt.reply)
				}
				// Hold the connection open, as Redis would, until the
				// client is done with it.
				_, _ = c.Read(make([]byte, 1))
			}()

			ic := &incrConn{addr: ln.Addr().String(), timeout: 200 * time.Millisecond}
			defer ic.Close()
			v, err := ic.IncrBy(counterKey, 14)
			if cmd := <-got; cmd != sent {
				t.Errorf("sent %q, want %q", cmd, sent)
			}
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("IncrBy: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("IncrBy = %d, %v; want an error with %q", v, err, tt.err)
			}
			if tt.err == "" && v != tt.want {
				t.Errorf("IncrBy = %d, want %d", v, tt.want)
			}
			if got := errors.As(err, new(redisError)); got != tt.redisErr {
				t.Errorf("error %v is a Redis reply: %v, want %v", err, got, tt.redisErr)
			}
			if kept := ic.c != nil; kept != tt.keepsConn {
				t.Errorf("connection kept: %v, want %v", kept, tt.keepsConn)
			}
		})
	}
}
