package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	fencedRE     = regexp.MustCompile("(?ms)^[ \t]*```.*?^[ \t]*```")
	codeSpanRE   = regexp.MustCompile("`([^`]+)`")
	deployerRE   = regexp.MustCompile(`^(?:bin/)?deployer ([a-z]+)\b(.*)$`)
	makeRE       = regexp.MustCompile(`^make ([a-z][a-z-]*)\b`)
	inlineFlagRE = regexp.MustCompile(`(?:^|\s)-([a-z][a-z0-9-]*)`)
)

// TestDocsInlineCommandsExist checks the commands that README.md and
// docs/*.md quote in their prose, as the README's table of everyday
// commands does: each `deployer COMMAND -flag ...` names a command of the
// table and flags it has, and each `make TARGET` a target of the Makefile.
func TestDocsInlineCommandsExist(t *testing.T) {
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{"../README.md"}, files...)
	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	sh := &shell{getenv: func(string) string { return "" }, stdout: io.Discard, stderr: io.Discard}
	flags := map[string]map[string]bool{}
	for _, c := range commands() {
		fs, _ := c.flagSet(sh)
		flags[c.name] = map[string]bool{"help": true}
		fs.VisitAll(func(f *flag.Flag) { flags[c.name][f.Name] = true })
	}
	seen := 0
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(file, "../")
		for _, m := range codeSpanRE.FindAllStringSubmatch(fencedRE.ReplaceAllString(string(b), ""), -1) {
			span := strings.Join(strings.Fields(m[1]), " ")
			if d := deployerRE.FindStringSubmatch(span); d != nil {
				seen++
				known, ok := flags[d[1]]
				if !ok {
					t.Errorf("%s: `%s`: deployer has no command %s", name, span, d[1])
					continue
				}
				for _, f := range inlineFlagRE.FindAllStringSubmatch(d[2], -1) {
					if !known[f[1]] {
						t.Errorf("%s: `%s`: deployer %s has no flag -%s", name, span, d[1], f[1])
					}
				}
			}
			if mk := makeRE.FindStringSubmatch(span); mk != nil {
				seen++
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(mk[1]) + `:`).Match(makefile) {
					t.Errorf("%s: `%s`: the Makefile has no target %s", name, span, mk[1])
				}
			}
		}
	}
	if seen == 0 {
		t.Error("no `deployer ...` or `make ...` found in README.md or docs/*.md: is the parser broken?")
	}
}
