// Package redisprobe sends Redis commands over a connection of their own,
// through go-redis, for code that checks a Redis from outside: the stack's
// readiness checks, the tests and the bench. Their view of Redis shares no
// pool with the client under test, and a server restarted since the last
// call is met afresh.
package redisprobe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// The limits of a probe: a second to connect, two to be answered.
const (
	DialTimeout = time.Second
	Timeout     = 2 * time.Second
)

// Do runs f with a client over one new connection to addr. The connection is
// dialled here, within DialTimeout, and handed to go-redis: a server not
// listening yet, which callers poll for, fails here rather than in
// go-redis's pool, which would log every refused dial and keep redialling in
// the background. Each command is sent once and fails after Timeout without
// an answer, so a paused server does not hang the caller. Errors name addr.
func Do(ctx context.Context, addr string, f func(context.Context, *redis.Client) error) error {
	nc, err := (&net.Dialer{Timeout: DialTimeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err // names addr
	}
	one := make(chan net.Conn, 1)
	one <- nc
	c := redis.NewClient(&redis.Options{
		Addr: addr,
		Dialer: func(context.Context, string, string) (net.Conn, error) {
			select {
			case conn := <-one:
				return conn, nil
			default:
				return nil, errors.New("its one connection was closed")
			}
		},
		ReadTimeout:     Timeout,
		WriteTimeout:    Timeout,
		MaxRetries:      -1,
		PoolSize:        1,
		DisableIdentity: true,
	})
	defer c.Close()
	if err := f(ctx, c); err != nil {
		return fmt.Errorf("redis %s: %w", addr, err)
	}
	return nil
}

// Ping reports whether the Redis at addr answers PING.
func Ping(ctx context.Context, addr string) error {
	return Do(ctx, addr, func(ctx context.Context, c *redis.Client) error {
		if err := c.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("PING: %w", err)
		}
		return nil
	})
}
