package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/kodekloud/counter/internal/redisprobe"
)

// pingRedis reports whether the Redis at addr answers PING, over a
// connection of its own (redisprobe).
func pingRedis(ctx context.Context, addr string) error { return redisprobe.Ping(ctx, addr) }

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
		DialTimeout:     redisprobe.DialTimeout,
		ReadTimeout:     redisprobe.Timeout,
		WriteTimeout:    redisprobe.Timeout,
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
