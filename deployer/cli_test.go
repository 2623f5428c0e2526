package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestEveryCommandsHelpListsItsFlagsAndExitCodes walks the command table:
// each command's -help is what the table and its flags say.
func TestEveryCommandsHelpListsItsFlagsAndExitCodes(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range commands() {
		t.Run(c.name, func(t *testing.T) {
			if seen[c.name] {
				t.Fatalf("two commands named %q", c.name)
			}
			seen[c.name] = true
			if c.synopsis == "" || c.doc == "" || len(c.exits) == 0 {
				t.Fatalf("command %q lacks a synopsis, a doc or its exit codes", c.name)
			}
			var out, errb bytes.Buffer
			err := run(context.Background(), []string{"deployer", c.name, "-help"}, func(string) string { return "" }, &out, &errb)
			if err != nil || errb.Len() > 0 {
				t.Fatalf("-help: %v, stderr %q; want help on stdout only", err, errb.String())
			}
			help := out.String()
			if !strings.HasPrefix(help, "Usage: deployer "+c.name+" ") {
				t.Errorf("help starts %q", strings.SplitN(help, "\n", 2)[0])
			}
			fs, _ := c.flagSet(&shell{getenv: func(string) string { return "" }, stdout: &out, stderr: &errb})
			fs.VisitAll(func(f *flag.Flag) {
				if f.Usage == "" {
					t.Errorf("flag -%s has no usage text", f.Name)
				}
				if !regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f.Name) + `\b`).MatchString(help) {
					t.Errorf("help does not list -%s", f.Name)
				}
			})
			for _, r := range c.required {
				if fs.Lookup(r) == nil {
					t.Errorf("required flag -%s is not registered", r)
				}
			}
			codes := help[strings.Index(help, "\nExit codes:\n"):]
			for _, e := range c.exits {
				first := strings.Fields(e.meaning)[0]
				if !regexp.MustCompile(`(?m)^  ` + strconv.Itoa(e.code) + ` +` + regexp.QuoteMeta(first)).MatchString(codes) {
					t.Errorf("help does not list exit code %d (%s):\n%s", e.code, e.meaning, codes)
				}
			}
		})
	}
}

// TestDocsExitCodesMatch checks the table of exit codes in docs/deployer.md
// against the code's, row by row.
func TestDocsExitCodesMatch(t *testing.T) {
	readme, err := os.ReadFile("../docs/deployer.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `?(\\d+)`? +\\| (.+?) +\\|$").FindAllStringSubmatch(string(readme), -1)
	got := map[int]string{}
	for _, r := range rows {
		n, _ := strconv.Atoi(r[1])
		got[n] = r[2]
	}
	for _, code := range []int{exitOK, exitError, exitUsage, exitFailed, exitAutoReverted, exitConflict, exitDrift, exitUnknown, exitFrontDoor} {
		if general, _, _ := strings.Cut(got[code], "; plan: "); general != exitMeaning(code) {
			t.Errorf("docs/deployer.md exit code %d: %q, want %q", code, got[code], exitMeaning(code))
		}
	}
	plan := planCommand()
	for _, e := range plan.exits {
		want := fmt.Sprintf("plan: %s", e.meaning)
		if e.code == exitOK || e.code == exitPlanChanged {
			// Shares its row with the general meaning: "... ; plan: ...".
			if !strings.Contains(got[e.code], want) {
				t.Errorf("docs/deployer.md exit code %d does not say %q: %q", e.code, want, got[e.code])
			}
			continue
		}
		if got[e.code] != want {
			t.Errorf("docs/deployer.md exit code %d: %q, want %q", e.code, got[e.code], want)
		}
	}
}

func TestRollbackTarget(t *testing.T) {
	tests := []struct {
		name, to, toVersion string
		wantTag             string
		wantVersion         string // "" for none
		wantErr             string
	}{
		{"default/neither", "", "", "", "", ""},
		{"by tag", "v7", "", "v7", "", ""},
		{"by version", "", "3", "", "3", ""},
		{"rejects/both", "v7", "3", "", "", "give -to or -to-version, not both"},
		{"rejects/a version that is not a number", "", "v3", "", "", `-to-version "v3" is not a version number`},
		{"rejects/a negative version", "", "-1", "", "", `-to-version "-1" is not a version number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rollbackTarget(tt.to, tt.toVersion)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || exitCode(err, &bytes.Buffer{}) != exitUsage {
					t.Fatalf("rollbackTarget = %v; want a usage error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v := ""
			if got.Version != nil {
				v = strconv.FormatUint(*got.Version, 10)
			}
			if got.Tag != tt.wantTag || v != tt.wantVersion {
				t.Errorf("target = %q/%s, want %q/%s", got.Tag, v, tt.wantTag, tt.wantVersion)
			}
		})
	}
}

func TestSubmitterIsNeverUnknown(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		git, osUser string
		want        string
	}{
		{"DEPLOYER_USER first", map[string]string{"DEPLOYER_USER": "ci-bot", "USER": "root"}, "dev@example.com", "root", "ci-bot"},
		{"then git's user.email", map[string]string{"USER": "root"}, "dev@example.com", "root", "dev@example.com"},
		{"then $USER", map[string]string{"USER": "alice", "LOGNAME": "bob"}, "", "root", "alice"},
		{"then $LOGNAME", map[string]string{"LOGNAME": "bob"}, "", "root", "bob"},
		{"then the OS user, as under root in a container", nil, "", "root", "root"},
		{"then the uid", nil, "", "", "uid 65532"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := who(func(k string) string { return tt.env[k] }, func() string { return tt.git }, func() string { return tt.osUser }, 65532)
			if got != tt.want {
				t.Errorf("who = %q, want %q", got, tt.want)
			}
		})
	}
}

// readmeCommandBlock returns docs/deployer.md's summary of the deployer's
// commands (the first code block under "## Commands"): each command's text,
// its line and the indented lines after it, without "# ..." comments.
func readmeCommandBlock(t *testing.T) map[string]string {
	t.Helper()
	readme, err := os.ReadFile("../docs/deployer.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, found := strings.Cut(string(readme), "\n## Commands\n")
	if !found {
		t.Fatal(`docs/deployer.md has no "## Commands" section`)
	}
	_, block, _ := strings.Cut(section, "```\n")
	block, _, found = strings.Cut(block, "```")
	if !found {
		t.Fatal(`docs/deployer.md's "## Commands" section has no code block`)
	}
	entries := map[string]string{}
	name := ""
	for i, line := range strings.Split(block, "\n") {
		line, _, _ = strings.Cut(line, "#")
		switch {
		case strings.TrimSpace(line) == "":
		case strings.HasPrefix(line, "deployer "):
			name = strings.Fields(line)[1]
			if _, dup := entries[name]; dup {
				t.Errorf("docs/deployer.md command block line %d: deployer %s again", i+1, name)
			}
			entries[name] = line
		case name != "" && (line[0] == ' ' || line[0] == '\t'):
			entries[name] += "\n" + line
		default:
			t.Errorf("docs/deployer.md command block line %d: %q is neither a command nor its continuation", i+1, line)
		}
	}
	return entries
}

// TestDocsCommandBlockListsEveryFlag keeps the hand-written summary of the
// commands in docs/deployer.md true: every command of the table is there
// with every flag it registers, and no flag it does not.
func TestDocsCommandBlockListsEveryFlag(t *testing.T) {
	entries := readmeCommandBlock(t)
	flagRE := regexp.MustCompile(`(?:^|[\s\[|])-([a-z][a-z0-9-]*)`)
	sh := &shell{getenv: func(string) string { return "" }, stdout: io.Discard, stderr: io.Discard}
	table := map[string]bool{}
	for _, c := range commands() {
		table[c.name] = true
		text, ok := entries[c.name]
		if !ok {
			t.Errorf("docs/deployer.md command block has no line for deployer %s", c.name)
			continue
		}
		listed := map[string]bool{}
		for _, m := range flagRE.FindAllStringSubmatch(text, -1) {
			listed[m[1]] = true
		}
		fs, _ := c.flagSet(sh)
		fs.VisitAll(func(f *flag.Flag) {
			if !listed[f.Name] {
				t.Errorf("docs/deployer.md command block: deployer %s lacks -%s", c.name, f.Name)
			}
			delete(listed, f.Name)
		})
		for name := range listed {
			t.Errorf("docs/deployer.md command block: deployer %s has no flag -%s", c.name, name)
		}
	}
	for name := range entries {
		if !table[name] {
			t.Errorf("docs/deployer.md command block lists deployer %s, which is not in the command table", name)
		}
	}
}
