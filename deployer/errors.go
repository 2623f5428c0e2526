package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/kodekloud/counter/internal/deploy"
)

// Exit codes. Plan follows `nomad job plan` instead: 0 no change, 1 change,
// 255 error.
const (
	exitOK           = 0
	exitError        = 1
	exitUsage        = 2
	exitFailed       = 3 // the deployment failed
	exitAutoReverted = 4 // the deployment failed and Nomad reverted the job
	exitConflict     = 5 // the job changed underneath, or another deploy holds it
)

// exitStatus carries an exit code; a nil err prints nothing.
type exitStatus struct {
	code int
	err  error
}

func (e *exitStatus) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitStatus) Unwrap() error { return e.err }

// usageError is a mistake on the command line.
func usageError(format string, args ...any) error {
	return &exitStatus{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// exitCode is the one place where errors become exit codes and messages.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitUsage
	}
	code := exitError
	var st *exitStatus
	var conflict *deploy.ConflictError
	switch {
	case errors.As(err, &st):
		code = st.code
		if st.err == nil {
			return code
		}
	case errors.As(err, &conflict):
		code = exitConflict
	}
	fmt.Fprintf(stderr, "deployer: %v\n", err)
	return code
}
