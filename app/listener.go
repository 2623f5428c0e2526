package main

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// patientListener waits out an Accept that failed for want of a descriptor
// or of kernel memory, as net/http's server does, instead of handing the
// error to fasthttp, which treats every error but a timeout as the end of
// Serve: at the descriptor limit the app would exit. The connection that
// could not be accepted stays in the kernel's backlog and is accepted once a
// descriptor is free (a slow client closed by its read timeout frees one).
type patientListener struct {
	net.Listener
	log *slog.Logger
}

// Accept's back-off runs from minAcceptDelay to maxAcceptDelay, doubling.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

func (l patientListener) Accept() (net.Conn, error) {
	delay := minAcceptDelay
	for {
		c, err := l.Listener.Accept()
		if err == nil || !outOfResources(err) {
			return c, err
		}
		if delay == minAcceptDelay {
			l.log.Warn("accept failed; waiting for a descriptor", "err", err.Error())
		}
		time.Sleep(delay)
		delay = min(2*delay, maxAcceptDelay)
	}
}

// outOfResources reports whether an Accept error is one that passes once
// descriptors or memory are freed.
func outOfResources(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
