package environment

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestShippedEnvironmentsLoad(t *testing.T) {
	tests := []struct {
		name string
		// maxProgress bounds progress_deadline, how long a release that
		// never turns healthy runs before Nomad fails and reverts it; 0
		// leaves it to the environment.
		maxProgress time.Duration
		// judged says the canary is judged by what it serves (an analysis
		// block) rather than promoted by Nomad once healthy.
		judged bool
	}{
		// The issue: in dev a release that cannot turn healthy fails
		// within about a minute.
		{"dev", time.Minute, false},
		{"test", 0, true},
		{"prod", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := Load("../../environments", tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if env.Job != "counter-"+tt.name || env.Namespace != "default" || env.Count < 1 {
				t.Errorf("defaults: job %q namespace %q count %d", env.Job, env.Namespace, env.Count)
			}
			// Old instances serve until new ones are promoted, in every
			// environment: a canary, reverted when it never turns healthy
			// or is failed, and promoted by Nomad once healthy where it is
			// not judged.
			u := env.Update
			if *u.Canary < 1 || *u.AutoPromote == tt.judged || !*u.AutoRevert {
				t.Errorf("%s: canary = %d, auto_promote = %t, auto_revert = %t; want a canary, promoted by Nomad %t, reverted automatically",
					env.File, *u.Canary, *u.AutoPromote, *u.AutoRevert, !tt.judged)
			}
			if (env.Analysis != nil) != tt.judged {
				t.Fatalf("%s: analysis block %t, want %t", env.File, env.Analysis != nil, tt.judged)
			}
			progress, err := time.ParseDuration(*u.ProgressDeadline)
			if err != nil {
				t.Fatal(err)
			}
			if tt.maxProgress > 0 && progress > tt.maxProgress {
				t.Errorf("%s: progress_deadline = %s, want at most %s", env.File, progress, tt.maxProgress)
			}
			if tt.judged {
				checkShippedAnalysis(t, env)
			}
		})
	}
}

// checkShippedAnalysis holds a shipped analysis block to what
// docs/environments.md promises of it: a release that could not be judged
// is failed, never promoted; a good canary is failed at most 1 % of the
// time, on at least the sample of docs/analysis.md's figures; a latency
// rule's threshold exceeds the app's buckets where stable's p90 falls
// (up to 2.5 ms), so that bucket width alone cannot fail a canary.
func checkShippedAnalysis(t *testing.T, env *Environment) {
	t.Helper()
	a := env.Analysis
	if *a.Inconclusive != "fail" || *a.Alpha > 0.01 || *a.MinSample < 300 || !*a.Errors {
		t.Errorf("%s: analysis inconclusive = %q, alpha = %g, min_sample = %d, errors = %t; want fail, at most 0.01, at least 300, true",
			env.File, *a.Inconclusive, *a.Alpha, *a.MinSample, *a.Errors)
	}
	if l := a.Latency; l != nil && l.ThresholdDuration < 10*time.Millisecond {
		t.Errorf("%s: latency threshold %s; want at least 10ms, above the width of the buckets where a healthy p90 falls", env.File, l.ThresholdDuration)
	}
	// The demo's load (scripts/demo) reaches min_sample well within it.
	if a.Longest < time.Minute {
		t.Errorf("%s: max_duration %s; want at least 1m", env.File, a.Longest)
	}
}

func TestParseAppliesDefaults(t *testing.T) {
	env, err := Parse("x.hcl", "x", []byte(`
datacenters = ["dc1"]
config {
  HOST = "redis"
  PORT = 6379
}
`))
	if err != nil {
		t.Fatal(err)
	}
	if env.Job != "counter-x" || env.Count != 1 || env.Resources.CPU != 100 || env.Resources.Memory != 64 || env.Update == nil {
		t.Errorf("defaults not applied: %+v %+v", env, env.Resources)
	}
	if got := env.Config.Values(); got["HOST"] != "redis" || got["PORT"] != "6379" || len(got) != 2 {
		t.Errorf("Values() = %v", got)
	}
}

func TestParseFillsEveryUpdateSetting(t *testing.T) {
	tests := []struct {
		name, block string
		want        Update
	}{
		{"defaults/no update block", "", update(1, 1, true, true, "10s", "5m", "5m30s")},
		{"defaults/empty update block", "update {}", update(1, 1, true, true, "10s", "5m", "5m30s")},
		{"defaults/progress deadline follows the healthy deadline", "update {\n healthy_deadline = \"45s\"\n min_healthy_time = \"3s\"\n}",
			update(1, 1, true, true, "3s", "45s", "1m15s")},
		{"keeps/what the file sets", "update {\n canary = 2\n auto_promote = false\n progress_deadline = \"20m\"\n}",
			update(1, 2, true, false, "10s", "5m", "20m")},
		// Without a canary, max_parallel below count keeps one old
		// instance serving through the update.
		{"keeps/false and zero", "count = 4\nupdate {\n auto_revert = false\n canary = 0\n max_parallel = 3\n}",
			update(3, 0, false, false, "10s", "5m", "5m30s")},
		// The deployer promotes a judged canary: Nomad must not.
		{"analysis/turns auto_promote off", "analysis {}", update(1, 1, true, false, "10s", "5m", "5m30s")},
		{"analysis/keeps auto_promote = false", "update {\n canary = 2\n auto_promote = false\n}\nanalysis {}",
			update(1, 2, true, false, "10s", "5m", "5m30s")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "datacenters = [\"dc1\"]\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\n" + tt.block + "\n"
			env, err := Parse("x.hcl", "x", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			u := env.Update
			if u.MaxParallel == nil || u.Canary == nil || u.AutoRevert == nil || u.AutoPromote == nil ||
				u.MinHealthyTime == nil || u.HealthyDeadline == nil || u.ProgressDeadline == nil {
				t.Fatalf("a setting was left unset: %+v", u)
			}
			got := fmt.Sprint(*u.MaxParallel, *u.Canary, *u.AutoRevert, *u.AutoPromote, *u.MinHealthyTime, *u.HealthyDeadline, *u.ProgressDeadline)
			want := fmt.Sprint(*tt.want.MaxParallel, *tt.want.Canary, *tt.want.AutoRevert, *tt.want.AutoPromote,
				*tt.want.MinHealthyTime, *tt.want.HealthyDeadline, *tt.want.ProgressDeadline)
			if got != want {
				t.Errorf("update = %s, want %s", got, want)
			}
		})
	}
}

func update(maxParallel, canary int, autoRevert, autoPromote bool, minHealthy, healthyDeadline, progressDeadline string) Update {
	return Update{&maxParallel, &canary, &autoRevert, &autoPromote, &minHealthy, &healthyDeadline, &progressDeadline}
}

func TestParseRejectsBadFiles(t *testing.T) {
	const good = "datacenters = [\"dc1\"]\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\n"
	tests := []struct {
		name string
		src  string
		want []string // all must appear in the error text
	}{
		{"rejects/unknown attribute", "colour = \"blue\"\n" + good,
			[]string{"bad.hcl:1,1", "Unsupported argument", `"colour"`}},
		{"rejects/non-numeric port", strings.Replace(good, "6379", `"http"`, 1),
			[]string{"bad.hcl:4,11", "Unsuitable value type", `PORT = "http"`, "^^^^"}},
		{"rejects/port above range", strings.Replace(good, "6379", "70000", 1),
			[]string{"bad.hcl:4,10", "PORT out of range", "PORT = 70000", "^"}},
		{"rejects/port zero", strings.Replace(good, "6379", "0", 1),
			[]string{"bad.hcl:4,10", "PORT out of range"}},
		{"rejects/empty host", strings.Replace(good, `"redis"`, `""`, 1),
			[]string{"bad.hcl:3,10", "Empty HOST"}},
		{"rejects/host with spaces", strings.Replace(good, `"redis"`, `"red is"`, 1),
			[]string{"bad.hcl:3,10", "Invalid HOST"}},
		{"rejects/count below one", "count = 0\n" + good,
			[]string{"bad.hcl:1,9", "Invalid count", "count = 0"}},
		{"rejects/missing PORT", strings.Replace(good, "  PORT = 6379\n", "", 1),
			[]string{"bad.hcl:2", `Missing required argument`, `"PORT"`}},
		{"rejects/missing config block", "datacenters = [\"dc1\"]\n",
			[]string{"bad.hcl", `Missing config block`}},
		{"rejects/unknown update field", good + "update {\n  canaries = 1\n}\n",
			[]string{"bad.hcl:7,3", "Unsupported argument", `"canaries"`}},
		{"rejects/bad duration", good + "update {\n  healthy_deadline = \"soon\"\n}\n",
			[]string{"bad.hcl:7,22", "Invalid duration"}},
		{"rejects/no datacenters", strings.Replace(good, `["dc1"]`, `[]`, 1),
			[]string{"bad.hcl:1,15", "No datacenters"}},
		{"rejects/syntax error", good + "update {\n",
			[]string{"bad.hcl:6", "Unclosed configuration block"}},
		{"rejects/bad job name", "job = \"counter prod\"\n" + good,
			[]string{"bad.hcl:1,7", "Invalid job name"}},
		{"rejects/job name with a slash", "job = \"counter/prod\"\n" + good,
			[]string{"bad.hcl:1,7", "Invalid job name", `"counter/prod"`}},
		// Nomad takes these job IDs, but Consul takes no policy named
		// after them, so with ACLs on the tasks would never read their
		// config.
		{"rejects/job name with an underscore, which no service name has", "job = \"counter_prod\"\n" + good,
			[]string{"bad.hcl:1,7", "Job name that cannot name its service", `job "counter_prod"`, "at most 63"}},
		{"rejects/job name longer than a service name", "job = \"" + strings.Repeat("j", 64) + "\"\n" + good,
			[]string{"bad.hcl:1,7", "Job name that cannot name its service"}},
		{"rejects/job name with a dot", "job = \"counter.prod\"\n" + good,
			[]string{"bad.hcl:1,7", "Job name without a Consul policy of its own", `job "counter.prod"`, "nomad-job-default_counter.prod has '.'", "^^^^^^^^^^^^^^"}},
		{"rejects/job name too long for its policy name", "job = \"" + strings.Repeat("j", 111) + "\"\n" + good,
			[]string{"bad.hcl:1,7", "Job name without a Consul policy of its own", `job "` + strings.Repeat("j", 111) + `"`, "is 129 characters long, more than the 128"}},
		{"rejects/job name too long for its policy name in a namespace longer than default", "namespace = \"team-abcd\"\njob = \"" + strings.Repeat("j", 110) + "\"\n" + good,
			[]string{"bad.hcl:2,7", "Job name without a Consul policy of its own", "nomad-job-team-abcd_jjj", "is 130 characters long"}},
		// Consul's policy names ignore case: job Counter's policy would be
		// job counter's.
		{"rejects/job name with upper case", "job = \"Counter-prod\"\n" + good,
			[]string{"bad.hcl:1,7", "Job name without a Consul policy of its own", `job "Counter-prod"`, "nomad-job-default_Counter-prod has upper case", "policy of nomad-job-default_counter-prod too"}},
		{"rejects/namespace with upper case", "namespace = \"Team-a\"\n" + good,
			[]string{"bad.hcl:1,13", "Invalid namespace", `"Team-a" has upper case`, `namespace "team-a"`}},
		// An underscore in a namespace would let two jobs' policy names
		// clash again (access.JobPolicy); Nomad refuses it anyway.
		{"rejects/namespace with an underscore", "namespace = \"team_a\"\n" + good,
			[]string{"bad.hcl:1,13", "Invalid namespace", `"team_a"`}},
		{"rejects/namespace with a dot", "namespace = \"team.a\"\n" + good,
			[]string{"bad.hcl:1,13", "Invalid namespace", `"team.a"`}},
		{"rejects/no progress deadline", good + "update {\n  progress_deadline = \"0s\"\n}\n",
			[]string{"bad.hcl:7,23", "No progress deadline", "never failed or reverted"}},
		{"rejects/progress deadline within the healthy deadline", good + "update {\n  healthy_deadline = \"45s\"\n  progress_deadline = \"45s\"\n}\n",
			[]string{"bad.hcl:8,23", "progress_deadline too short", "progress_deadline = 45s must be longer than healthy_deadline = 45s"}},
		{"rejects/progress deadline within the default healthy deadline", good + "update {\n  progress_deadline = \"2m\"\n}\n",
			[]string{"bad.hcl:7,23", "must be longer than healthy_deadline = 5m0s"}},
		{"rejects/auto promote without a canary", good + "update {\n  canary = 0\n  auto_promote = true\n}\n",
			[]string{"bad.hcl:8,18", "Invalid auto_promote", "no canary to promote"}},
		{"rejects/no canary with one instance", good + "update {\n  canary = 0\n}\n",
			[]string{"bad.hcl:7,12", "No instance left serving", "canary = 0 with count = 1 and max_parallel = 1", "stop every running instance"}},
		{"rejects/no canary with one instance set explicitly", "count = 1\n" + good + "update {\n  canary = 0\n  max_parallel = 1\n}\n",
			[]string{"bad.hcl:8,12", "No instance left serving", "canary = 0 with count = 1"}},
		{"rejects/no canary with max_parallel replacing every instance at once", "count = 2\n" + good + "update {\n  canary = 0\n  max_parallel = 2\n}\n",
			[]string{"bad.hcl:8,12", "No instance left serving", "canary = 0 with count = 2 and max_parallel = 2"}},
		{"rejects/url without a scheme", "url = \"127.0.0.1:8081\"\n" + good,
			[]string{"bad.hcl:1,7", "Invalid url", `url = "127.0.0.1:8081"`}},
		{"rejects/url of another scheme", "url = \"ftp://127.0.0.1:8081/\"\n" + good,
			[]string{"bad.hcl:1,7", "Invalid url", "want an http:// or https:// URL"}},
		{"rejects/url without a host", "url = \"http:///x\"\n" + good,
			[]string{"bad.hcl:1,7", "Invalid url", "names no host"}},
		{"rejects/url with a port out of range", "url = \"http://127.0.0.1:70000/\"\n" + good,
			[]string{"bad.hcl:1,7", "Invalid url", "port 70000"}},
		{"rejects/url with a query", "url = \"http://127.0.0.1:8081/?a=b\"\n" + good,
			[]string{"bad.hcl:1,7", "Invalid url", "no user, query or fragment"}},
		{"rejects/min healthy time past the healthy deadline", good + "update {\n  healthy_deadline = \"5s\"\n}\n",
			[]string{"bad.hcl:6", "min_healthy_time too long", "min_healthy_time = 10s must be shorter than healthy_deadline = 5s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantRefused(t, tt.src, tt.want) })
	}
}

// wantRefused checks that Parse refuses src with an *Error whose text
// holds every string of want.
func wantRefused(t *testing.T, src string, want []string) {
	t.Helper()
	_, err := Parse("bad.hcl", "bad", []byte(src))
	var envErr *Error
	if !errors.As(err, &envErr) {
		t.Fatalf("Parse = %v, want *environment.Error", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%s", w, err)
		}
	}
}

// The longest job ID whose policy name Consul takes, and namespaces with
// dashes, are accepted.
func TestParseAcceptsJobsConsulCanName(t *testing.T) {
	const good = "datacenters = [\"dc1\"]\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\n"
	tests := []struct {
		name, namespace, job string
	}{
		{"accepts/the longest job a service can be named after", "", strings.Repeat("j", 63)},
		{"accepts/a namespace with dashes", "a-b", "c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := fmt.Sprintf("job = %q\n", tt.job) + good
			if tt.namespace != "" {
				src = fmt.Sprintf("namespace = %q\n", tt.namespace) + src
			}
			env, err := Parse("ok.hcl", "ok", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			if env.Job != tt.job {
				t.Errorf("job %q, want %q", env.Job, tt.job)
			}
		})
	}
}

func TestLoadNamesKnownEnvironmentsWhenMissing(t *testing.T) {
	_, err := Load("../../environments", "staging")
	if err == nil || !strings.Contains(err.Error(), "dev, prod, test") {
		t.Errorf("Load(staging) = %v, want the known environments listed", err)
	}
}

func TestPipelineOrder(t *testing.T) {
	tests := []struct {
		name  string
		names []string
		want  []string
	}{
		{"dev, test, prod in pipeline order", []string{"dev", "prod", "test"}, []string{"dev", "test", "prod"}},
		{"then the others alphabetically", []string{"staging", "prod", "demo", "dev"}, []string{"dev", "prod", "demo", "staging"}},
		{"only the stages that exist", []string{"prod", "qa"}, []string{"prod", "qa"}},
		{"none of the three", []string{"b", "a"}, []string{"a", "b"}},
		{"none at all", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.names)
			got := Pipeline(tt.names)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Pipeline(%q) = %q, want %q", tt.names, got, tt.want)
			}
			if !slices.Equal(in, tt.names) {
				t.Errorf("Pipeline changed its argument to %q", tt.names)
			}
		})
	}
}

func TestRefusePointsAtTheValueOrWhereItWouldGo(t *testing.T) {
	const src = "datacenters = [\"dc1\"]\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\nupdate {\n  progress_deadline = \"12s\"\n  min_healthy_time = \"1s\"\n  healthy_deadline = \"10s\"\n}\n"
	env, err := Parse("dev.hcl", "dev", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, block, attr string
		want              []string
	}{
		{"set attribute", "update", "progress_deadline", []string{"dev.hcl:7,23: Too short: the detail", `progress_deadline = "12s"`, "^^^^^"}},
		{"unset attribute, its block", "update", "max_parallel", []string{"dev.hcl:6,8: Too short"}},
		{"unset block, the file", "resources", "cpu", []string{"dev.hcl:1,1: Too short"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := env.Refuse(tt.block, tt.attr, "Too short", "the detail")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Refuse returned %T, want *Error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%s", w, err)
				}
			}
		})
	}
	if !env.Set("update", "progress_deadline") || env.Set("update", "max_parallel") || env.Set("resources", "cpu") || !env.Set("", "datacenters") {
		t.Errorf("Set does not tell the file's attributes from those it leaves out")
	}
	for _, made := range []struct {
		env  *Environment
		want string
	}{
		{&Environment{Name: "dev", File: "environments/dev.hcl"}, "environments/dev.hcl: Too short: the detail"},
		{&Environment{Name: "dev"}, "environment dev as its release recorded it: Too short: the detail"},
	} {
		if err := made.env.Refuse("update", "progress_deadline", "Too short", "the detail"); err.Error() != made.want {
			t.Errorf("an environment made in code: %q, want %q", err, made.want)
		}
	}
}

func TestListenAddrFromURL(t *testing.T) {
	const good = "datacenters = [\"dc1\"]\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\n"
	tests := []struct{ name, url, want string }{
		{"the url's host and port", "http://127.0.0.1:8081/", "127.0.0.1:8081"},
		{"the scheme's port when the url has none", "http://counter.example.com/", "counter.example.com:80"},
		{"https's port", "https://counter.example.com", "counter.example.com:443"},
		{"none without a url", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := good
			if tt.url != "" {
				src = fmt.Sprintf("url = %q\n", tt.url) + good
			}
			env, err := Parse("ok.hcl", "ok", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			if got := env.ListenAddr(); got != tt.want || env.URL != tt.url {
				t.Errorf("url %q: ListenAddr() = %q, URL %q; want %q", tt.url, got, env.URL, tt.want)
			}
		})
	}
}

func TestParseAnalysis(t *testing.T) {
	const good = "datacenters = [\"dc1\"]\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\n"
	tests := []struct {
		name, block string
		want        string // fmt of the filled-in block
	}{
		{"defaults/an empty block judges errors", "analysis {}",
			"errors true alpha 0.01 min_sample 300 every 10s longest 5m0s inconclusive fail latency <nil>"},
		{"keeps/what the file sets", "analysis {\n  alpha = 0.001\n  min_sample = 600\n  interval = \"30s\"\n  max_duration = \"20m\"\n  inconclusive = \"promote\"\n}",
			"errors true alpha 0.001 min_sample 600 every 30s longest 20m0s inconclusive promote latency <nil>"},
		{"defaults/latency's quantile", "analysis {\n  latency {\n    threshold = \"25ms\"\n  }\n}",
			"errors true alpha 0.01 min_sample 300 every 10s longest 5m0s inconclusive fail latency 0.9 25ms"},
		{"keeps/latency alone", "analysis {\n  errors = false\n  latency {\n    quantile = 0.99\n    threshold = \"50ms\"\n  }\n}",
			"errors false alpha 0.01 min_sample 300 every 10s longest 5m0s inconclusive fail latency 0.99 50ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := Parse("x.hcl", "x", []byte(good+tt.block+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			a := env.Analysis
			latency := "<nil>"
			if a.Latency != nil {
				latency = fmt.Sprint(*a.Latency.Quantile, " ", a.Latency.ThresholdDuration)
			}
			got := fmt.Sprintf("errors %t alpha %g min_sample %d every %s longest %s inconclusive %s latency %s",
				*a.Errors, *a.Alpha, *a.MinSample, a.Every, a.Longest, *a.Inconclusive, latency)
			if got != tt.want {
				t.Errorf("analysis = %s\nwant       %s", got, tt.want)
			}
			if p := a.Plan(); p.Alpha != *a.Alpha || p.MinSample != int64(*a.MinSample) || (p.Latency == nil) != (a.Latency == nil) || p.IgnoreErrors == *a.Errors {
				t.Errorf("Plan() = %+v does not follow the block", p)
			}
		})
	}
	env, err := Parse("x.hcl", "x", []byte(good))
	if err != nil || env.Analysis != nil {
		t.Errorf("a file without an analysis block: %+v, %v; want no analysis", env.Analysis, err)
	}
}

func TestParseRejectsBadAnalysis(t *testing.T) {
	const good = "datacenters = [\"dc1\"]\nconfig {\n  HOST = \"redis\"\n  PORT = 6379\n}\n"
	// Each block starts on line 6.
	tests := []struct {
		name, block string
		want        []string // all must appear in the error text
	}{
		{"rejects/unknown attribute", "analysis {\n  metric = \"5xx\"\n}",
			[]string{"bad.hcl:7,3", "Unsupported argument", `"metric"`}},
		{"rejects/alpha of 0", "analysis {\n  alpha = 0\n}",
			[]string{"bad.hcl:7,11", "Invalid alpha", "alpha = 0:", "alpha = 0\n", "^"}},
		{"rejects/alpha as a percentage", "analysis {\n  alpha = 5\n}",
			[]string{"bad.hcl:7,11", "Invalid alpha", "below 0.5"}},
		{"rejects/alpha as a string", "analysis {\n  alpha = \"low\"\n}",
			[]string{"bad.hcl:7,12", "Unsuitable value type", "^^^"}},
		{"rejects/min_sample of 0", "analysis {\n  min_sample = 0\n}",
			[]string{"bad.hcl:7,16", "Invalid min_sample", "at least 1"}},
		// 3 errors of 3 against 0 of 6 is p = 1/84 = 0.012, above the
		// 0.008 left for the last look.
		{"rejects/min_sample too small to ever fail", "analysis {\n  min_sample = 3\n}",
			[]string{"bad.hcl:7,16", "min_sample too small to fail a canary", "p = 0.012", "could never fail"}},
		{"rejects/bad interval", "analysis {\n  interval = \"often\"\n}",
			[]string{"bad.hcl:7,14", "Invalid duration", `interval = "often"`}},
		{"rejects/interval of 0", "analysis {\n  interval = \"0s\"\n}",
			[]string{"bad.hcl:7,14", "Invalid duration"}},
		{"rejects/interval under a second", "analysis {\n  interval = \"100ms\"\n}",
			[]string{"bad.hcl:7,14", "interval too short", "at least 1s"}},
		{"rejects/max_duration before the first look", "analysis {\n  interval = \"1m\"\n  max_duration = \"30s\"\n}",
			[]string{"bad.hcl:8,18", "max_duration shorter than interval", "end before its first look"}},
		{"rejects/max_duration below the default interval", "analysis {\n  max_duration = \"5s\"\n}",
			[]string{"bad.hcl:7,18", "max_duration = 5s with interval = 10s"}},
		{"rejects/unknown inconclusive action", "analysis {\n  inconclusive = \"wait\"\n}",
			[]string{"bad.hcl:7,18", "Invalid inconclusive", `"wait"`, `"fail"`}},
		{"rejects/latency without a threshold", "analysis {\n  latency {\n  }\n}",
			[]string{"bad.hcl:7", "Missing required argument", `"threshold"`}},
		{"rejects/latency quantile of 1", "analysis {\n  latency {\n    quantile = 1\n    threshold = \"25ms\"\n  }\n}",
			[]string{"bad.hcl:8,16", "Invalid quantile", "quantile = 1:"}},
		{"rejects/latency quantile as a percentile", "analysis {\n  latency {\n    quantile = 99\n    threshold = \"25ms\"\n  }\n}",
			[]string{"bad.hcl:8,16", "Invalid quantile", "0.9 for p90"}},
		{"rejects/latency threshold that is no duration", "analysis {\n  latency {\n    threshold = \"25\"\n  }\n}",
			[]string{"bad.hcl:8,17", "Invalid threshold", `threshold = "25"`}},
		{"rejects/negative latency threshold", "analysis {\n  latency {\n    threshold = \"-5ms\"\n  }\n}",
			[]string{"bad.hcl:8,17", "Invalid threshold"}},
		{"rejects/an analysis that judges nothing", "analysis {\n  errors = false\n}",
			[]string{"bad.hcl:7,12", "Analysis that judges nothing", "pass every canary"}},
		{"rejects/an analysis without a canary", "count = 2\nupdate {\n  canary = 0\n}\nanalysis {}",
			[]string{"bad.hcl:8,12", "Analysis without a canary", "canary = 0"}},
		{"rejects/auto_promote = true beside it", "update {\n  auto_promote = true\n}\nanalysis {}",
			[]string{"bad.hcl:7,18", "auto_promote with an analysis block", "before the deployer judges it"}},
		{"rejects/two mistakes, both named", "analysis {\n  alpha = 1\n  inconclusive = \"maybe\"\n}",
			[]string{"bad.hcl:7,11", "Invalid alpha", "bad.hcl:8,18", "Invalid inconclusive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantRefused(t, good+tt.block+"\n", tt.want) })
	}
}
