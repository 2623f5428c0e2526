package main

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// config is the app's whole configuration, read from the environment once at
// start so that a bad value stops the process before it serves anything.
type config struct {
	redisAddr  string // HOST:PORT of the Redis that holds visitorCount
	listenAddr string // LISTEN_ADDR, where the HTTP server listens

	// redisTimeout bounds one request's wait on Redis, so a slow or dead
	// Redis turns into a prompt 503 rather than a pile of blocked requests.
	redisTimeout time.Duration
	// shutdownTimeout bounds how long in-flight requests may run after
	// SIGTERM before the server closes them.
	shutdownTimeout time.Duration
}

// loadConfig reads the configuration from getenv. Errors name the variable and
// its value and fit on one line.
func loadConfig(getenv func(string) string) (config, error) {
	cfg := config{
		listenAddr:      ":8080",
		redisTimeout:    time.Second,
		shutdownTimeout: 10 * time.Second,
	}
	host := getenv("HOST")
	if host == "" {
		return cfg, fmt.Errorf("HOST is empty: set it to the Redis host name or address")
	}
	port := getenv("PORT")
	if port == "" {
		return cfg, fmt.Errorf("PORT is empty: set it to the Redis port (1-65535)")
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return cfg, fmt.Errorf("PORT=%q is not a number: set it to the Redis port (1-65535)", port)
	}
	if n < 1 || n > 65535 {
		return cfg, fmt.Errorf("PORT=%q is out of range: set it to the Redis port (1-65535)", port)
	}
	cfg.redisAddr = net.JoinHostPort(host, strconv.Itoa(n))
	if v := getenv("LISTEN_ADDR"); v != "" {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return cfg, fmt.Errorf("LISTEN_ADDR=%q is not host:port: %v", v, err)
		}
		cfg.listenAddr = v
	}
	return cfg, nil
}
