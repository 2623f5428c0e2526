package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisTimeouts are the bench's limits on Redis: a second to connect, two
// to be answered, each command sent once. They are the limits of a checker,
// not of the app: the bench reads and resets the counter between loads.
const (
	redisDialTimeout = time.Second
	redisTimeout     = 2 * time.Second
)

// pingRedis reports whether the Redis at addr answers PING, over a
// connection of its own. The connection is dialled here and handed to
// go-redis: a server not listening yet, which waitFor polls for, fails here
// rather than in go-redis's pool, which would log every refused dial and
// keep redialling in the background. Errors name addr.
func pingRedis(ctx context.Context, addr string) error {
	nc, err := (&net.Dialer{Timeout: redisDialTimeout}).DialContext(ctx, "tcp", addr)
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
		ReadTimeout:     redisTimeout,
		WriteTimeout:    redisTimeout,
		MaxRetries:      -1,
		PoolSize:        1,
		DisableIdentity: true,
	})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: PING: %w", addr, err)
	}
	return nil
}

// counterStore reads and resets the counter the apps increment, on the
// Redis the bench started; pingRedis has seen it answer, so its pool
// dials a server that is up.
type counterStore struct {
	addr string
	rdb  *redis.Client
}

func newCounterStore(addr string) *counterStore {
	return &counterStore{addr: addr, rdb: redis.NewClient(&redis.Options{
		Addr:            addr,
		DialTimeout:     redisDialTimeout,
		ReadTimeout:     redisTimeout,
		WriteTimeout:    redisTimeout,
		MaxRetries:      -1,
		PoolSize:        1,
		DisableIdentity: true,
	})}
}

func (s *counterStore) Close() error { return s.rdb.Close() }

// get returns the counter, 0 when the key does not exist.
func (s *counterStore) get(ctx context.Context) (int64, error) {
	v, err := s.rdb.Get(ctx, counterKey).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("redis %s: GET %s: %w", s.addr, counterKey, err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redis %s: GET %s answered %q: not a number", s.addr, counterKey, v)
	}
	return n, nil
}

// reset sets the counter to 0.
func (s *counterStore) reset(ctx context.Context) error {
	if err := s.rdb.Set(ctx, counterKey, "0", 0).Err(); err != nil {
		return fmt.Errorf("redis %s: SET %s 0: %w", s.addr, counterKey, err)
	}
	return nil
}

// counterKey is the key GET / increments.
const counterKey = "visitorCount"
