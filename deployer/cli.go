package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/kodekloud/counter/internal/helptext"
)

// commands is the deployer's command table, in the order help lists them.
// Adding a command is one file that returns a *command and one line here.
func commands() []*command {
	return []*command{
		buildCommand(),
		renderCommand(),
		planCommand(),
		submitCommand(),
		historyCommand(),
		rollbackCommand(),
		promoteCommand(),
		statusCommand(),
		deploymentCommand(),
		analyzeCommand(),
		gcCommand(),
		backupCommand(),
		restoreCommand(),
		validateCommand(),
	}
}

// A command is one subcommand. Its help is generated from these fields and
// from the flags it registers, so it cannot drift from what it parses.
type command struct {
	name     string
	args     string // the usage line after the command's name
	synopsis string // its line in `deployer -help`
	doc      string // what it does, for its own help
	required []string
	maxArgs  int // positional arguments it takes after the flags; -1: any number
	exits    []exitDoc
	// errorCode, when set, replaces the exit code of every error and usage
	// mistake: plan answers 255 to all of them, as nomad job plan does.
	errorCode int
	// flags registers the command's options on fs and returns the function
	// that runs it once they are parsed; args are the ones left over.
	flags func(fs *flag.FlagSet, sh *shell) func(ctx context.Context, args []string) error
}

// shell is what run was given: the process environment and its streams.
type shell struct {
	getenv         func(string) string
	stdout, stderr io.Writer
}

const overview = `Usage: deployer <command> [options]

Build, release and run the counter service on Nomad and Consul. A release
is one pinned image bundled with one environment's config; each release is a
new version of the environment's Nomad job, named vN.

Commands:
%s
Run "deployer <command> -help" for a command's options and exit codes.

Nomad and Consul are reached as their own CLIs do: NOMAD_ADDR, NOMAD_TOKEN,
NOMAD_REGION, CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN...
`

func usage(cmds []*command) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, c := range cmds {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.synopsis)
	}
	tw.Flush()
	return fmt.Sprintf(overview, b.String())
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) < 2 {
		fmt.Fprint(stderr, usage(cmds))
		return &exitStatus{code: exitUsage}
	}
	name, rest := args[1], args[2:]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(rest) == 0 {
			fmt.Fprint(stdout, usage(cmds))
			return nil
		}
		name, rest = rest[0], []string{"-help"}
	}
	for _, c := range cmds {
		if c.name == name {
			err := c.run(ctx, rest, &shell{getenv: getenv, stdout: stdout, stderr: stderr})
			var changed planChanged
			if err == nil || c.errorCode == 0 || errors.As(err, &changed) {
				return err
			}
			// Keep the message, if any, and replace the code.
			var st *exitStatus
			if errors.As(err, &st) && st.err == nil {
				return &exitStatus{code: c.errorCode}
			}
			return &exitStatus{code: c.errorCode, err: err}
		}
	}
	fmt.Fprint(stderr, usage(cmds))
	return usageError("unknown command %q", name)
}

// flagSet returns the command's flag set and the function that runs it.
func (c *command) flagSet(sh *shell) (*flag.FlagSet, func(context.Context, []string) error) {
	fs := flag.NewFlagSet("deployer "+c.name, flag.ContinueOnError)
	fs.SetOutput(sh.stderr)
	fs.Usage = func() {} // run prints the help itself, on stdout for -help
	return fs, c.flags(fs, sh)
}

func (c *command) run(ctx context.Context, args []string, sh *shell) error {
	fs, act := c.flagSet(sh)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(sh.stdout, c.help(fs))
			return nil
		}
		// flag has printed what was wrong.
		fmt.Fprint(sh.stderr, c.help(fs))
		return &exitStatus{code: exitUsage}
	}
	for _, r := range c.required {
		if fs.Lookup(r).Value.String() != "" {
			continue
		}
		// Name them all, as the usage line does.
		fmt.Fprint(sh.stderr, c.help(fs))
		verb := "is"
		if len(c.required) > 1 {
			verb = "are"
		}
		return usageError("%s: %s %s required", c.name, strings.Join(c.requiredFlags(), " and "), verb)
	}
	if c.maxArgs >= 0 && fs.NArg() > c.maxArgs {
		return usageError("%s: unexpected arguments %q", c.name, fs.Args()[c.maxArgs:])
	}
	return act(ctx, fs.Args())
}

func (c *command) requiredFlags() []string {
	names := make([]string, len(c.required))
	for i, r := range c.required {
		names[i] = "-" + r
	}
	return names
}

// help is the command's -help text: usage line, what it does, its options
// as registered (with their defaults), and its exit codes.
func (c *command) help(fs *flag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: deployer %s %s\n\n%s\n", c.name, c.args, strings.TrimSpace(c.doc))
	b.WriteString("\nOptions:\n")
	fs.VisitAll(func(f *flag.Flag) {
		name, text := flag.UnquoteUsage(f)
		head := "  -" + f.Name
		if name != "" {
			head += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			if _, err := strconv.Atoi(f.DefValue); err == nil {
				text += fmt.Sprintf(" (default %s)", f.DefValue)
			} else {
				text += fmt.Sprintf(" (default %q)", f.DefValue)
			}
		}
		for _, r := range c.required {
			if r == f.Name {
				text += " (required)"
			}
		}
		helptext.Wrap(&b, 23, head, text)
	})
	b.WriteString("\nExit codes:\n")
	for _, e := range c.exits {
		helptext.Wrap(&b, 8, fmt.Sprintf("  %d", e.code), e.meaning)
	}
	return b.String()
}
