package release

import (
	"fmt"
	"path"
	"strconv"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"

	"github.com/kodekloud/counter/internal/environment"
	"github.com/kodekloud/counter/internal/imageref"
)

// recorded is the shape of the variables Variables writes.
type recorded struct {
	Job         string            `cty:"job_name"`
	Namespace   string            `cty:"namespace"`
	Datacenters []string          `cty:"datacenters"`
	Count       int               `cty:"count"`
	Image       string            `cty:"image"`
	ConfigPath  string            `cty:"config_path"`
	CPU         int               `cty:"cpu"`
	Memory      int               `cty:"memory"`
	Update      recordedUpdate    `cty:"update"`
	Meta        map[string]string `cty:"release"`
	Description string            `cty:"description"`
	Config      map[string]string `cty:"config"`
	Hosts       []string          `cty:"extra_hosts"`
}

type recordedUpdate struct {
	MaxParallel      int    `cty:"max_parallel"`
	Canary           int    `cty:"canary"`
	AutoRevert       bool   `cty:"auto_revert"`
	AutoPromote      bool   `cty:"auto_promote"`
	MinHealthyTime   string `cty:"min_healthy_time"`
	HealthyDeadline  string `cty:"healthy_deadline"`
	ProgressDeadline string `cty:"progress_deadline"`
}

// FromVariables reads back the release whose Variables are vars, as Nomad
// keeps them with a job version's submission: the way to a release's
// config when its snapshot in Consul was edited or deleted. It refuses
// variables it cannot reproduce exactly, such as those of a deployer that
// did not record the config, rather than guess at what ran.
func FromVariables(vars string, paths Paths) (*Release, error) {
	file, diags := hclsyntax.ParseConfig([]byte(vars), "submission variables", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fmt.Errorf("read the recorded variables: %s", diags.Error())
	}
	attrs, diags := file.Body.JustAttributes()
	if diags.HasErrors() {
		return nil, fmt.Errorf("read the recorded variables: %s", diags.Error())
	}
	if _, ok := attrs["config"]; !ok {
		return nil, fmt.Errorf("the recorded variables hold no config (the version was made by a deployer that did not record it)")
	}
	values := map[string]cty.Value{}
	for name, a := range attrs {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			return nil, fmt.Errorf("read the recorded variable %s: %s", name, diags.Error())
		}
		values[name] = v
	}
	if _, ok := values["extra_hosts"]; !ok {
		values["extra_hosts"] = cty.ListValEmpty(cty.String)
	}
	// HCL literals are tuples and objects: convert them to the lists and
	// maps the job spec declares.
	var rec recorded
	ty, err := gocty.ImpliedType(&rec)
	if err != nil {
		return nil, err
	}
	v, err := convert.Convert(cty.ObjectVal(values), ty)
	if err == nil {
		err = gocty.FromCtyValue(v, &rec)
	}
	if err != nil {
		return nil, fmt.Errorf("read the recorded variables: %v", err)
	}

	port, err := strconv.Atoi(rec.Config["PORT"])
	if err != nil {
		return nil, fmt.Errorf("the recorded config's PORT %q is not a number", rec.Config["PORT"])
	}
	u := rec.Update
	env := &environment.Environment{
		Name: rec.Meta[MetaEnvironment], Job: rec.Job, Namespace: rec.Namespace,
		Datacenters: rec.Datacenters, Count: rec.Count,
		Config:    environment.Config{Host: rec.Config["HOST"], Port: port},
		Resources: &environment.Resources{CPU: rec.CPU, Memory: rec.Memory},
		Update: &environment.Update{
			MaxParallel: &u.MaxParallel, Canary: &u.Canary, AutoRevert: &u.AutoRevert, AutoPromote: &u.AutoPromote,
			MinHealthyTime: &u.MinHealthyTime, HealthyDeadline: &u.HealthyDeadline, ProgressDeadline: &u.ProgressDeadline,
		},
	}
	ref, err := imageref.Parse(rec.Meta[MetaImage])
	if err != nil {
		return nil, fmt.Errorf("the recorded image: %w", err)
	}
	r := New(env, imageref.Image{Ref: ref}, rec.Meta[MetaGitCommit], rec.Meta[MetaSubmittedBy], paths)
	r.PromotedFrom = rec.Meta[MetaPromotedFrom]
	if len(rec.Hosts) > 0 {
		r.Hosts = rec.Hosts
	}
	if r, err = r.WithSnapshot(path.Base(rec.ConfigPath), paths); err != nil {
		return nil, fmt.Errorf("the recorded config_path %s: %w", rec.ConfigPath, err)
	}
	// Written back, they must be what was recorded, meta (the config's
	// hash included) and all.
	if got := r.Variables(); got != vars {
		return nil, fmt.Errorf("the recorded variables are not those of a release this deployer makes, so they cannot be restored exactly")
	}
	return r, nil
}
