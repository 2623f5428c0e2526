package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/kodekloud/counter/internal/deploy"
)

// Exit codes. Each has one meaning for every command, except plan's, which
// follow `nomad job plan` so that scripts written for it work unchanged.
const (
	exitOK           = 0
	exitError        = 1
	exitUsage        = 2
	exitFailed       = 3
	exitAutoReverted = 4
	exitConflict     = 5
	exitDrift        = 6
	exitUnknown      = 7
	exitFrontDoor    = 8

	exitPlanChanged = 1
	exitPlanError   = 255
)

// exitMeaning says what a code means for the commands other than plan; help
// texts and docs/deployer.md's table say the same (a test checks both).
func exitMeaning(code int) string {
	switch code {
	case exitOK:
		return "success"
	case exitError:
		return "error: bad input, a server unreachable or refusing; nothing was changed unless the message says so"
	case exitUsage:
		return "usage: unknown command or flag, a missing or malformed value"
	case exitFailed:
		return "the deployment failed"
	case exitAutoReverted:
		return "the deployment failed and Nomad reverted the job to an earlier version"
	case exitConflict:
		return "conflict: the job changed since it was read, or another deploy holds its lock; nothing was changed"
	case exitDrift:
		return "drift: the running job is not what the deployer released"
	case exitFrontDoor:
		return "the front door is down: the environment's url does not answer (status; an answer of any HTTP status is up)"
	case exitUnknown:
		return "unknown: the release is or may be registered, but how its deployment ends was not seen (contact lost, a register or revert Nomad did not clearly answer, canaries awaiting promotion); the message says what to check"
	}
	return fmt.Sprintf("exit code %d has no meaning", code)
}

// exitDoc is one line of a command's "Exit codes:" help.
type exitDoc struct {
	code    int
	meaning string
}

// codes documents exit codes with their usual meanings.
func codes(cs ...int) []exitDoc {
	docs := make([]exitDoc, len(cs))
	for i, c := range cs {
		docs[i] = exitDoc{c, exitMeaning(c)}
	}
	return docs
}

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

// planChanged is plan's answer when the release would create or destroy
// allocations: not an error, but a different exit code, as nomad job plan
// gives.
type planChanged struct{}

func (planChanged) Error() string { return "the plan creates or destroys allocations" }

// exitCode is the one place where errors become exit codes and messages.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	// A refused token is said in one line: which system refused what, and
	// which policy file to change.
	err = deploy.Denied(err)
	code := exitError
	var st *exitStatus
	var conflict *deploy.ConflictError
	switch {
	case errors.As(err, new(planChanged)):
		return exitPlanChanged
	case errors.As(err, &st):
		code = st.code
		if st.err == nil {
			return code
		}
	case errors.As(err, &conflict):
		code = exitConflict
	}
	var denied *deploy.DeniedError
	if errors.As(err, &denied) {
		err = denied
	}
	fmt.Fprintf(stderr, "deployer: %v\n", err)
	return code
}
