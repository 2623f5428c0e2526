package localstack

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestProductionFrontDoorRunsTheStacksSettings checks that the HAProxy
// config of the production front door, jobs/frontdoor.nomad.hcl's
// template, is the one the stack renders line for line, but for the lines
// that name where it runs (its binds, Consul's agents, the service and its
// slots, which the job takes from its variables and Nomad) and the stack's
// admin socket: a setting changed in one and not the other fails here. It
// starts nothing.
func TestProductionFrontDoorRunsTheStacksSettings(t *testing.T) {
	spec, err := os.ReadFile(filepath.Join("..", "..", "jobs", "frontdoor.nomad.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	job, err := jobTemplate(string(spec))
	if err != nil {
		t.Fatalf("jobs/frontdoor.nomad.hcl: %v", err)
	}
	// The job's frontend and backend are named app.
	stack := HAProxyConfig([]FrontDoor{{Env: "app", Addr: "127.0.0.1:80", Service: "counter-prod", Slots: 10}},
		[]string{"127.0.0.1:8600"}, "127.0.0.1:8404", "/run/haproxy.sock")

	// Where it runs: the job's lines that interpolate, the stack's that
	// name addresses, each set as expected.
	wantJobPlaces := []string{
		"${local.nameservers}",
		`bind {{ env "NOMAD_ADDR_stats" }}`,
		`bind {{ env "NOMAD_ADDR_http" }}`,
		"server-template app ${var.slots} _${var.service}._tcp.service.consul",
	}
	jobSettings, jobPlaces := split(job, regexp.MustCompile(`\$\{|\{\{`))
	stackSettings, stackPlaces := split(stack, regexp.MustCompile(`^(nameserver|bind|server-template|stats socket) `))
	if !slices.Equal(jobPlaces, wantJobPlaces) {
		t.Errorf("the job's template interpolates %q, want %q", jobPlaces, wantJobPlaces)
	}
	if len(stackPlaces) != 5 {
		t.Errorf("the stack's config names its places in %q, want 5 lines (nameserver, 2 binds, server-template, stats socket)", stackPlaces)
	}
	if !slices.Equal(jobSettings, stackSettings) {
		t.Errorf("jobs/frontdoor.nomad.hcl's HAProxy settings differ from the stack's (internal/localstack/frontdoor.go):\n%s",
			lineDiff(stackSettings, jobSettings))
	}
}

// jobTemplate is the data of the one template block of a job spec, its
// heredoc's lines without their indent.
func jobTemplate(spec string) (string, error) {
	_, after, ok := strings.Cut(spec, "<<-EOT\n")
	if !ok {
		return "", errors.New("no template heredoc (data = <<-EOT)")
	}
	body, _, ok := strings.Cut(after, "\n        EOT\n")
	if !ok {
		return "", errors.New("the template's heredoc does not end with EOT at the template's indent")
	}
	return body, nil
}

// split returns a config's settings, its lines trimmed with comments and
// blank lines left out, and apart from them those that place matches.
func split(conf string, place *regexp.Regexp) (settings, places []string) {
	for _, l := range strings.Split(conf, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case place.MatchString(l):
			places = append(places, l)
		default:
			settings = append(settings, l)
		}
	}
	return settings, places
}

// lineDiff lists the lines of want missing from got and those of got
// not in want.
func lineDiff(want, got []string) string {
	var b strings.Builder
	for _, l := range want {
		if !slices.Contains(got, l) {
			b.WriteString("  only the stack's: " + l + "\n")
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			b.WriteString("  only the job's:   " + l + "\n")
		}
	}
	if b.Len() == 0 {
		b.WriteString("  the same lines in another order\n")
	}
	return b.String()
}
