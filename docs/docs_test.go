package docs

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// page is one Markdown file of the documentation, by its path from the
// repository's root.
type page struct {
	path  string
	lines []string
}

// block is a fenced block of a page.
type block struct {
	page   *page
	line   int    // 1-based line of the opening fence
	lang   string // the fence's info string, first word
	marker string // the line before the opening fence, trimmed
	text   string // the block's lines, without the fence's indent
}

// repoRoot is the repository's root: the test runs in docs/.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// pages reads README.md and docs/*.md.
func pages(t *testing.T, root string) []*page {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{filepath.Join(root, "README.md")}, files...)
	var ps []*page
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, f)
		ps = append(ps, &page{path: filepath.ToSlash(rel), lines: strings.Split(string(b), "\n")})
	}
	return ps
}

var fenceRE = regexp.MustCompile("^(\\s*)(```+|~~~+)\\s*([^\\s`]*)")

// blocks returns the page's fenced blocks, and outside them its lines
// (fenced lines are blank in the second result).
func (p *page) blocks(t *testing.T) ([]block, []string) {
	t.Helper()
	var bs []block
	prose := make([]string, len(p.lines))
	for i := 0; i < len(p.lines); i++ {
		m := fenceRE.FindStringSubmatch(p.lines[i])
		if m == nil {
			prose[i] = p.lines[i]
			continue
		}
		b := block{page: p, line: i + 1, lang: m[3]}
		if i > 0 {
			b.marker = strings.TrimSpace(p.lines[i-1])
		}
		indent, fence := m[1], m[2]
		var body []string
		for i++; ; i++ {
			if i == len(p.lines) {
				t.Fatalf("%s:%d: a fenced block that never closes", p.path, b.line)
			}
			if strings.HasPrefix(strings.TrimSpace(p.lines[i]), fence) {
				break
			}
			body = append(body, strings.TrimPrefix(p.lines[i], indent))
		}
		b.text = strings.Join(body, "\n")
		bs = append(bs, b)
	}
	return bs, prose
}

// pasteable says whether a user would paste the block into a shell: a
// shell block, or a session whose first line is a "$ " prompt.
func (b block) pasteable() bool {
	switch b.lang {
	case "sh", "bash", "shell", "console", "zsh":
		return true
	}
	return strings.HasPrefix(b.text, "$ ")
}

var (
	runByRE  = regexp.MustCompile(`^<!-- run by (\S+) -->$`)
	notRunRE = regexp.MustCompile(`^<!-- not run: (.+\S) -->$`)
)

// TestDocsShellBlocksAreRun checks that every command block a user would
// paste from README.md or docs/*.md is run as written: the line before it
// is "<!-- run by TestXxx -->", naming a test of the repository that reads
// that file, or "<!-- run by .ci/run -->", whose script runs each of the
// block's commands, or "<!-- not run: REASON -->".
func TestDocsShellBlocksAreRun(t *testing.T) {
	root := repoRoot(t)
	tests := testFuncs(t, root)
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	ciLines := map[string]bool{}
	for _, l := range strings.Split(string(ci), "\n") {
		ciLines[strings.TrimSpace(l)] = true
	}
	n := 0
	for _, p := range pages(t, root) {
		bs, _ := p.blocks(t)
		for _, b := range bs {
			if !b.pasteable() {
				continue
			}
			n++
			where := p.path + ":" + strconv.Itoa(b.line)
			if m := notRunRE.FindStringSubmatch(b.marker); m != nil {
				continue
			}
			m := runByRE.FindStringSubmatch(b.marker)
			switch {
			case m == nil:
				t.Errorf("%s: a %q block with neither <!-- run by TestXxx --> nor <!-- not run: reason --> on the line before it (it has %q)", where, b.lang, b.marker)
			case m[1] == ".ci/run":
				for _, cmd := range commands(b.text) {
					if !ciLines[cmd] {
						t.Errorf("%s: .ci/run does not run %q as written", where, cmd)
					}
				}
			default:
				fn, ok := tests[m[1]]
				if !ok {
					t.Errorf("%s: run by %s, but no test of that name is in the repository", where, m[1])
					continue
				}
				if !fn.names(filepath.Base(p.path)) {
					t.Errorf("%s: run by %s (%s), which does not name %s", where, m[1], fn.file, filepath.Base(p.path))
				}
			}
		}
	}
	if n == 0 {
		t.Error("no command block found in README.md or docs/*.md: is the parser broken?")
	}
}

// commands are a shell block's command lines, without comments.
func commands(text string) []string {
	var cmds []string
	for _, l := range strings.Split(text, "\n") {
		if i := strings.Index(l, " #"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

// testFunc is a Test function of the repository and the string literals in
// its body.
type testFunc struct {
	file    string
	strings []string
}

// names says whether the test's body holds a string that ends with base,
// the file it reads its block from.
func (f testFunc) names(base string) bool {
	return slices.ContainsFunc(f.strings, func(s string) bool { return strings.HasSuffix(s, base) })
}

// testFuncs finds every Test function in the repository's _test.go files.
func testFuncs(t *testing.T, root string) map[string]testFunc {
	t.Helper()
	funcs := map[string]testFunc{}
	fset := token.NewFileSet()
	walkGo(t, root, func(path string) {
		if !strings.HasSuffix(path, "_test.go") {
			return
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Errorf("parse %s: %v", path, err)
			return
		}
		rel, _ := filepath.Rel(root, path)
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv != nil || fd.Body == nil || !strings.HasPrefix(fd.Name.Name, "Test") {
				continue
			}
			tf := testFunc{file: rel}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil {
						tf.strings = append(tf.strings, s)
					}
				}
				return true
			})
			funcs[fd.Name.Name] = tf
		}
	})
	return funcs
}

// walkGo calls fn for each .go file of the repository's own module: not
// under tools/ (modules of their own), testdata, bin/ or hidden folders.
func walkGo(t *testing.T, root string, fn func(path string)) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "tools" || name == "bin" || name == "bench-results") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			fn(path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var (
	linkRE       = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	inlineCodeRE = regexp.MustCompile("`[^`]*`")
	slugDropRE   = regexp.MustCompile(`[^\p{L}\p{N} _-]`)
)

// slug is the anchor GitHub gives a heading.
func slug(heading string) string {
	return strings.ReplaceAll(slugDropRE.ReplaceAllString(strings.ToLower(strings.TrimSpace(heading)), ""), " ", "-")
}

// anchors are the anchors of a page's headings.
func (p *page) anchors(t *testing.T) map[string]bool {
	t.Helper()
	_, prose := p.blocks(t)
	seen := map[string]int{}
	as := map[string]bool{}
	for _, l := range prose {
		if !strings.HasPrefix(l, "#") {
			continue
		}
		s := slug(strings.TrimLeft(l, "#"))
		if k := seen[s]; k > 0 {
			as[s+"-"+strconv.Itoa(k)] = true
		} else {
			as[s] = true
		}
		seen[s]++
	}
	return as
}

// TestDocsLinksResolve checks that every relative link of README.md and
// docs/*.md points at a file that exists and, into a page, at one of its
// headings.
func TestDocsLinksResolve(t *testing.T) {
	root := repoRoot(t)
	ps := pages(t, root)
	byPath := map[string]*page{}
	for _, p := range ps {
		byPath[p.path] = p
	}
	n := 0
	for _, p := range ps {
		_, prose := p.blocks(t)
		for i, l := range prose {
			for _, m := range linkRE.FindAllStringSubmatch(inlineCodeRE.ReplaceAllString(l, ""), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				n++
				where := p.path + ":" + strconv.Itoa(i+1)
				file, anchor, _ := strings.Cut(target, "#")
				to := p.path
				if file != "" {
					to = filepath.ToSlash(filepath.Join(filepath.Dir(p.path), file))
					if _, err := os.Stat(filepath.Join(root, to)); err != nil {
						t.Errorf("%s: link to %s: %v", where, target, err)
						continue
					}
				}
				if anchor == "" {
					continue
				}
				tp, ok := byPath[to]
				if !ok {
					continue // an anchor into a page these tests do not read
				}
				if !tp.anchors(t)[anchor] {
					t.Errorf("%s: link to %s: %s has no heading #%s", where, target, to, anchor)
				}
			}
		}
	}
	if n == 0 {
		t.Error("no relative link found in README.md or docs/*.md: is the parser broken?")
	}
}

// TestREADMEMapsEveryPackage checks that the README's map of the code has a
// line for every folder of the module that holds Go files.
func TestREADMEMapsEveryPackage(t *testing.T) {
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Where the code lives\n")
	if !ok {
		t.Fatal(`README.md has no "## Where the code lives"`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	dirs := map[string]bool{}
	walkGo(t, root, func(path string) {
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		dirs[filepath.ToSlash(rel)] = true
	})
	for dir := range dirs {
		if dir == "." {
			continue
		}
		if !strings.Contains(section, "| `"+dir+"/` |") {
			t.Errorf("README.md's map of the code has no line | `%s/` |", dir)
		}
	}
	// And no line for a package that has gone.
	for _, m := range regexp.MustCompile("(?m)^\\| `((?:app|cmd|deployer|internal|docs)[^`]*)/` \\|").FindAllStringSubmatch(section, -1) {
		if !dirs[m[1]] {
			t.Errorf("README.md's map of the code has a line for %s/, which has no Go files", m[1])
		}
	}
}

// TestDocsConsoleBlocksRunAsWritten runs the console sessions of the pages
// below that are marked as run by it: each "$ COMMAND" line runs in bash,
// in a folder where bin/app is the app built from app/, outside Nomad, and
// must print the lines that follow it and exit with status 1, as the page
// says of a bad variable.
func TestDocsConsoleBlocksRunAsWritten(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", "app"), "./app")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./app: %v\n%s", err, out)
	}
	const marker = "<!-- run by TestDocsConsoleBlocksRunAsWritten -->"
	n := 0
	for _, p := range pages(t, root) {
		if !slices.Contains([]string{"app.md"}, filepath.Base(p.path)) {
			continue
		}
		bs, _ := p.blocks(t)
		for _, b := range bs {
			if b.marker != marker {
				continue
			}
			n++
			for _, s := range sessions(b.text) {
				t.Run(s.command, func(t *testing.T) {
					cmd := exec.Command("bash", "-c", s.command)
					cmd.Dir = dir
					cmd.Env = withoutNomad(os.Environ())
					out, err := cmd.CombinedOutput()
					if got := string(bytes.TrimRight(out, "\n")); got != s.output {
						t.Errorf("%s:%d: $ %s printed\n%s\nwant\n%s", p.path, b.line, s.command, got, s.output)
					}
					if code := cmd.ProcessState.ExitCode(); code != 1 {
						t.Errorf("%s:%d: $ %s exited %d (%v), want 1", p.path, b.line, s.command, code, err)
					}
				})
			}
		}
	}
	if n == 0 {
		t.Errorf("no block of docs/app.md is marked %s", marker)
	}
}

// session is one "$ command" of a console block and the output after it.
type session struct{ command, output string }

func sessions(text string) []session {
	var ss []session
	for _, l := range strings.Split(text, "\n") {
		if c, ok := strings.CutPrefix(l, "$ "); ok {
			ss = append(ss, session{command: c})
			continue
		}
		if len(ss) > 0 {
			s := &ss[len(ss)-1]
			if s.output != "" {
				s.output += "\n"
			}
			s.output += l
		}
	}
	return ss
}

// withoutNomad is env without NOMAD_ALLOC_ID, so the app fails at once as
// it does outside Nomad.
func withoutNomad(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, "NOMAD_ALLOC_ID=") })
}
