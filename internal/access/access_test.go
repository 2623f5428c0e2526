package access_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/kodekloud/counter/internal/access"
	"github.com/kodekloud/counter/internal/configstore"
	"github.com/kodekloud/counter/internal/localstack"
	"github.com/kodekloud/counter/internal/testsupport/stacktest"
)

func TestMain(m *testing.M) { stacktest.Main(m) }

// Each job gets a policy of its own: with a dash after the namespace, job
// "c" of namespace "a-b" and job "b-c" of namespace "a" shared one, and each
// one's tasks read the other's config.
func TestJobPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, namespace, job, want string
	}{
		{"names/a job of the default namespace", "default", "counter-prod", "nomad-job-default_counter-prod"},
		{"names/job c of namespace a-b", "a-b", "c", "nomad-job-a-b_c"},
		{"names/job b-c of namespace a", "a", "b-c", "nomad-job-a_b-c"},
		{"names/job b_c of namespace a", "a", "b_c", "nomad-job-a_b_c"},
		{"names/job default-counter of namespace default", "default", "default-counter", "nomad-job-default_default-counter"},
		{"names/job counter of namespace default-default", "default-default", "counter", "nomad-job-default-default_counter"},
	}
	owner := map[string]string{} // policy name → the row that got it
	for _, tt := range tests {
		got := access.JobPolicy(tt.namespace, tt.job)
		t.Run(tt.name, func(t *testing.T) {
			if got != tt.want {
				t.Errorf("JobPolicy(%q, %q) = %q, want %q", tt.namespace, tt.job, got, tt.want)
			}
		})
		if o, ok := owner[got]; ok {
			t.Errorf("%q and %q both get policy %s", o, tt.name, got)
		}
		owner[got] = tt.name
	}

	// Every pair of a namespace Nomad takes and a job ID, up to three
	// characters of the letters that could blur the join.
	var names func(alphabet string, n int) []string
	names = func(alphabet string, n int) []string {
		if n == 0 {
			return []string{""}
		}
		var out []string
		for _, s := range names(alphabet, n-1) {
			for _, r := range alphabet {
				out = append(out, s+string(r))
			}
		}
		return out
	}
	var namespaces, jobs []string
	for n := 1; n <= 3; n++ {
		namespaces = append(namespaces, names("a-", n)...)
		jobs = append(jobs, names("a-_", n)...)
	}
	seen := map[string][2]string{}
	for _, ns := range namespaces {
		for _, job := range jobs {
			p := access.JobPolicy(ns, job)
			if o, ok := seen[p]; ok {
				t.Fatalf("job %q of namespace %q and job %q of namespace %q both get policy %s", o[1], o[0], job, ns, p)
			}
			seen[p] = [2]string{ns, job}
		}
	}
}

// A task's login gets its job's policy and nothing else, and Consul gives
// no token to exactly the jobs CheckJobPolicy refuses. The identities are
// signed by a stand-in for Nomad with the claims Nomad gives a task, so
// that jobs Nomad's own tests could not run (a namespace with a dash, a
// name Consul refuses) log in too.
func TestTaskLoginGetsItsJobsPolicyAlone(t *testing.T) {
	s := stacktest.Start(t)
	_, cc := stacktest.Clients(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nomadSigner := newSigner(t)
	if err := access.SetUpWorkloadIdentity(ctx, cc, nomadSigner.url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := access.SetUpWorkloadIdentity(context.Background(), cc, s.NomadAddr+"/.well-known/jwks.json"); err != nil {
			t.Errorf("give the auth method Nomad's JWKS back: %v", err)
		}
	})

	id := stacktest.Name(t, "login")
	type job struct{ namespace, name string }
	tests := []struct {
		name string
		job  job
	}{
		{"gets its policy/a job of the default namespace", job{"default", id}},
		{"gets its policy/job c of a namespace ending in -b", job{id + "-b", "c"}},
		{"gets its policy/job b-c of the namespace before that -b", job{id, "b-c"}},
		{"gets its policy/a job with an underscore", job{"default", id + "_b"}},
		{"gets its policy/the longest job of the default namespace", job{"default", id + strings.Repeat("j", 110-len(id))}},
		// Not id + "/b": its folder would lie in job id's.
		{"gets no token/a slash, which Consul takes in a policy's name but not at login", job{"default", "slash-" + id + "/b"}},
		{"gets no token/a dot", job{"default", id + ".b"}},
		{"gets no token/a name one longer than Consul takes", job{"default", id + strings.Repeat("j", 111-len(id))}},
	}
	folder := func(j job) string { return configstore.New(nil, "").Folder(j.namespace, j.name) }
	for _, tt := range tests {
		if _, err := cc.KV().Put(&consul.KVPair{Key: folder(tt.job) + "/PORT", Value: []byte(tt.name)}, nil); err != nil {
			t.Fatal(err)
		}
		// What GrantJobConfig would write, even where it refuses to.
		rules := fmt.Sprintf("key_prefix %q {\n  policy = \"read\"\n}\n", folder(tt.job)+"/")
		_ = access.PutConsulPolicy(ctx, cc, access.JobPolicy(tt.job.namespace, tt.job.name), rules)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := access.CheckJobPolicy(tt.job.namespace, tt.job.name)
			if strings.HasPrefix(tt.name, "gets its policy/") != (want == nil) {
				t.Errorf("CheckJobPolicy(%q, %q) = %v", tt.job.namespace, tt.job.name, want)
			}
			tok, _, err := cc.ACL().Login(&consul.ACLLoginParams{
				AuthMethod:  access.AuthMethod,
				BearerToken: nomadSigner.sign(t, map[string]any{"nomad_namespace": tt.job.namespace, "nomad_job_id": tt.job.name, "nomad_task": "app"}),
			}, nil)
			if want != nil {
				if err == nil {
					t.Errorf("login of a task of job %q (namespace %q) got a token with policies %v; CheckJobPolicy said %v",
						tt.job.name, tt.job.namespace, policyNames(tok), want)
				}
				return
			}
			if err != nil {
				t.Fatalf("login of a task of job %q (namespace %q): %v", tt.job.name, tt.job.namespace, err)
			}
			if got, p := policyNames(tok), access.JobPolicy(tt.job.namespace, tt.job.name); !slices.Equal(got, []string{p}) {
				t.Errorf("the task's token has policies %v, want only %s", got, p)
			}
			kv := clientKV(t, s, tok.SecretID)
			for _, other := range tests {
				p, _, err := kv.Get(folder(other.job)+"/PORT", nil)
				switch {
				case other.job == tt.job && (err != nil || p == nil):
					t.Errorf("the task cannot read its own %s/PORT: %v %v", folder(tt.job), p, err)
				case other.job != tt.job && (err == nil || !strings.Contains(err.Error(), "403")):
					t.Errorf("the task read %s/PORT of job %q (namespace %q): %v %v, want 403", folder(other.job), other.job.name, other.job.namespace, p, err)
				}
			}
		})
	}
}

// Consul's policy names ignore case, so a job of upper-case letters would
// write, and read with, the policy of the job of its lower-case name:
// GrantJobConfig refuses it.
func TestGrantJobConfigRefusesUpperCase(t *testing.T) {
	t.Parallel()
	s := stacktest.Start(t)
	_, cc := stacktest.Clients(t, s)
	ctx := context.Background()
	lower := stacktest.Name(t, "case")
	upper := strings.ToUpper(lower)
	if err := access.GrantJobConfig(ctx, cc, "default", lower, "x/"+lower); err != nil {
		t.Fatal(err)
	}
	p, _, err := cc.ACL().PolicyReadByName(access.JobPolicy("default", upper), nil)
	if err != nil || p == nil || p.Name != access.JobPolicy("default", lower) {
		t.Errorf("Consul's policy %s: %+v %v, want that of %s, as Consul ignores case", access.JobPolicy("default", upper), p, err, lower)
	}
	err = access.GrantJobConfig(ctx, cc, "default", upper, "x/"+upper)
	if err == nil || !strings.Contains(err.Error(), "upper case") {
		t.Errorf("GrantJobConfig of job %s: %v, want a refusal that names upper case", upper, err)
	}
	if p, _, err := cc.ACL().PolicyReadByName(access.JobPolicy("default", lower), nil); err != nil || p == nil || !strings.Contains(p.Rules, `"x/`+lower+`/"`) {
		t.Errorf("job %s's policy after the refusal: %+v %v, want its own rules", lower, p, err)
	}
}

// signer stands in for Nomad's workload identity signer: a JWKS server
// Consul's auth method can trust, and tokens signed with its key.
type signer struct {
	key *rsa.PrivateKey
	url string
}

func newSigner(tb testing.TB) *signer {
	tb.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "test", "use": "sig", "alg": "RS256",
		"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
	}}})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	}))
	tb.Cleanup(srv.Close)
	return &signer{key: key, url: srv.URL + "/.well-known/jwks.json"}
}

// sign returns a JWT with claims, for Consul's audience, valid for a minute.
func (s *signer) sign(tb testing.TB, claims map[string]any) string {
	tb.Helper()
	now := time.Now().Unix()
	claims["aud"], claims["iat"], claims["nbf"], claims["exp"] = access.Audience, now, now, now+60
	var parts []string
	for _, v := range []any{map[string]string{"alg": "RS256", "kid": "test", "typ": "JWT"}, claims} {
		b, err := json.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		parts = append(parts, base64.RawURLEncoding.EncodeToString(b))
	}
	sum := sha256.Sum256([]byte(strings.Join(parts, ".")))
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.key, crypto.SHA256, sum[:])
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Join(append(parts, base64.RawURLEncoding.EncodeToString(sig)), ".")
}

func policyNames(t *consul.ACLToken) []string {
	var names []string
	if t != nil {
		for _, p := range t.Policies {
			names = append(names, p.Name)
		}
	}
	return names
}

// wantRules are the binding rules SetUpWorkloadIdentity makes, written out
// here so that a change of the policy name's format shows.
var wantRules = []consul.ACLBindingRule{
	{AuthMethod: access.AuthMethod, BindType: consul.BindingRuleBindTypeService,
		BindName: "${value.nomad_service}", Selector: `"nomad_service" in value`},
	{AuthMethod: access.AuthMethod, BindType: consul.BindingRuleBindTypePolicy,
		BindName: "nomad-job-${value.nomad_namespace}_${value.nomad_job_id}", Selector: `"nomad_service" not in value`},
}

// A second run leaves what the first made: one auth method, with the
// second run's JWKS, and the two binding rules, not recreated.
func TestSetUpWorkloadIdentityRunsAgain(t *testing.T) {
	s := stacktest.Start(t)
	_, cc := stacktest.Clients(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	jwks := s.NomadAddr + "/.well-known/jwks.json"
	var ids []string
	// Consul fetches the keys when the method is written: the first run's
	// JWKS must answer too.
	for i, url := range []string{newSigner(t).url, jwks, jwks} {
		if err := access.SetUpWorkloadIdentity(ctx, cc, url); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		methods, _, err := cc.ACL().AuthMethodList(nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range methods {
			names = append(names, m.Name)
		}
		if !slices.Equal(names, []string{access.AuthMethod}) {
			t.Errorf("run %d: auth methods %v, want only %s", i+1, names, access.AuthMethod)
		}
		m, _, err := cc.ACL().AuthMethodRead(access.AuthMethod, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Config["JWKSURL"]; got != url {
			t.Errorf("run %d: the auth method's JWKS is %v, want %s", i+1, got, url)
		}
		now := ruleIDs(t, cc)
		if i > 0 && !slices.Equal(now, ids) {
			t.Errorf("run %d: binding rules %v, the run before left %v", i+1, now, ids)
		}
		ids = now
	}
}

// A binding rule on the auth method that SetUpWorkloadIdentity does not
// make goes at its next run: left there, it could give a task more than
// its job's policy.
func TestSetUpWorkloadIdentityDeletesStaleRules(t *testing.T) {
	s := stacktest.Start(t)
	_, cc := stacktest.Clients(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	jwks := s.NomadAddr + "/.well-known/jwks.json"
	tests := []struct {
		name  string
		stale consul.ACLBindingRule
	}{
		{"deletes/the policy name with a dash, whose names clash", consul.ACLBindingRule{
			BindType: consul.BindingRuleBindTypePolicy,
			BindName: "nomad-job-${value.nomad_namespace}-${value.nomad_job_id}", Selector: `"nomad_service" not in value`}},
		{"deletes/a broader policy for every identity", consul.ACLBindingRule{
			BindType: consul.BindingRuleBindTypePolicy, BindName: "global-management"}},
		{"deletes/the job's policy for services too", consul.ACLBindingRule{
			BindType: consul.BindingRuleBindTypePolicy, BindName: wantRules[1].BindName}},
		{"deletes/a service identity of another name", consul.ACLBindingRule{
			BindType: consul.BindingRuleBindTypeService, BindName: "counter", Selector: `"nomad_service" in value`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := access.SetUpWorkloadIdentity(ctx, cc, jwks); err != nil {
				t.Fatal(err)
			}
			stale := tt.stale
			stale.AuthMethod, stale.Description = access.AuthMethod, "stale: "+tt.name
			r, _, err := cc.ACL().BindingRuleCreate(&stale, nil)
			if err != nil {
				t.Fatalf("create the stale rule: %v", err)
			}
			if err := access.SetUpWorkloadIdentity(ctx, cc, jwks); err != nil {
				t.Fatal(err)
			}
			if ids := ruleIDs(t, cc); slices.Contains(ids, r.ID) {
				t.Errorf("the stale rule %s (%s %s) is still there: rules %v", r.ID, r.BindType, r.BindName, ids)
			}
		})
	}
}

// ruleIDs checks the auth method has exactly the wanted binding rules and
// returns their IDs, sorted.
func ruleIDs(tb testing.TB, cc *consul.Client) []string {
	tb.Helper()
	rules, _, err := cc.ACL().BindingRuleList(access.AuthMethod, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for _, w := range wantRules {
		n := 0
		for _, r := range rules {
			if r.AuthMethod == w.AuthMethod && r.BindType == w.BindType && r.BindName == w.BindName && r.Selector == w.Selector {
				n++
			}
		}
		if n != 1 {
			tb.Errorf("%d binding rules %s %s if %s, want 1", n, w.BindType, w.BindName, w.Selector)
		}
	}
	for _, r := range rules {
		ids = append(ids, r.ID)
	}
	if len(rules) != len(wantRules) {
		var got []string
		for _, r := range rules {
			got = append(got, fmt.Sprintf("%s %s if %q", r.BindType, r.BindName, r.Selector))
		}
		tb.Errorf("%d binding rules on %s, want %d: %s", len(rules), access.AuthMethod, len(wantRules), strings.Join(got, "; "))
	}
	slices.Sort(ids)
	return ids
}

// PutConsulPolicy writes only a change: the same rules again leave the
// policy's ModifyIndex as it was, other rules move it.
func TestPutConsulPolicyWritesOnlyChanges(t *testing.T) {
	t.Parallel()
	s := stacktest.Start(t)
	_, cc := stacktest.Clients(t, s)
	ctx := context.Background()
	name := stacktest.Name(t, "policy")
	const a, b = `key_prefix "a/" { policy = "read" }`, `key_prefix "b/" { policy = "read" }`
	steps := []struct {
		name    string
		rules   string
		changed bool
	}{
		{"creates", a, true},
		{"leaves/the same rules", a, false},
		{"updates/other rules", b, true},
		{"leaves/those rules again", b, false},
		{"updates/the first rules back", a, true},
	}
	var index uint64
	for _, st := range steps {
		if err := access.PutConsulPolicy(ctx, cc, name, st.rules); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		p, _, err := cc.ACL().PolicyReadByName(name, nil)
		if err != nil || p == nil {
			t.Fatalf("%s: read policy %s: %v %v", st.name, name, p, err)
		}
		if p.Rules != st.rules {
			t.Errorf("%s: rules %q, want %q", st.name, p.Rules, st.rules)
		}
		if changed := p.ModifyIndex != index; changed != st.changed {
			t.Errorf("%s: ModifyIndex %d, was %d; want a change: %t", st.name, p.ModifyIndex, index, st.changed)
		}
		index = p.ModifyIndex
	}
}

// A job's policy reads its own config folder and nothing else: not
// another job's, not one whose name extends its own, not the job's its name
// clashed with when the namespace ended in a dash; and it writes nothing.
func TestGrantJobConfigReadsOnlyTheJobsFolder(t *testing.T) {
	t.Parallel()
	s := stacktest.Start(t)
	_, cc := stacktest.Clients(t, s)
	type job struct{ namespace, name string }
	// Namespaces of Consul's policies, which need no Nomad namespace.
	ns := stacktest.Name(t, "ns")
	id, id2 := stacktest.Name(t, "job"), stacktest.Name(t, "job")
	tests := []struct {
		name       string
		own, other job
	}{
		{"denies/another job of the namespace", job{"default", id}, job{"default", stacktest.Name(t, "job")}},
		{"denies/a job whose name extends its own", job{"default", id + "-b"}, job{"default", id + "-b-2"}},
		{"denies/the job its name clashed with", job{ns + "-b", "c"}, job{ns, "b-c"}},
		{"denies/the same job of another namespace", job{ns, id2}, job{"default", id2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			folders := map[job]string{}
			for _, j := range []job{tt.own, tt.other} {
				folders[j] = configstore.New(nil, "").Folder(j.namespace, j.name)
				if _, err := cc.KV().Put(&consul.KVPair{Key: folders[j] + "/PORT", Value: []byte("6379")}, nil); err != nil {
					t.Fatal(err)
				}
				if err := access.GrantJobConfig(ctx, cc, j.namespace, j.name, folders[j]); err != nil {
					t.Fatal(err)
				}
			}
			for _, pair := range [][2]job{{tt.own, tt.other}, {tt.other, tt.own}} {
				me, them := pair[0], pair[1]
				kv := tokenKV(t, s, cc, access.JobPolicy(me.namespace, me.name))
				if p, _, err := kv.Get(folders[me]+"/PORT", nil); err != nil || p == nil || string(p.Value) != "6379" {
					t.Errorf("job %s/%s cannot read its own %s/PORT: %v %v", me.namespace, me.name, folders[me], p, err)
				}
				if keys, _, err := kv.Keys(folders[me]+"/", "", nil); err != nil || len(keys) != 1 {
					t.Errorf("job %s/%s lists its folder %s: %v %v, want one key", me.namespace, me.name, folders[me], keys, err)
				}
				if p, _, err := kv.Get(folders[them]+"/PORT", nil); err == nil || !strings.Contains(err.Error(), "403") {
					t.Errorf("job %s/%s read %s/PORT of job %s/%s: %v %v, want 403", me.namespace, me.name, folders[them], them.namespace, them.name, p, err)
				}
				if _, err := kv.Put(&consul.KVPair{Key: folders[me] + "/PORT", Value: []byte("1")}, nil); err == nil || !strings.Contains(err.Error(), "403") {
					t.Errorf("job %s/%s wrote its own %s/PORT: %v, want 403", me.namespace, me.name, folders[me], err)
				}
			}
		})
	}
}

// tokenKV is the KV of a Consul client with a new token of policy.
func tokenKV(tb testing.TB, s *localstack.Stack, cc *consul.Client, policy string) *consul.KV {
	tb.Helper()
	secret, err := access.ConsulToken(context.Background(), cc, policy, "test of "+policy)
	if err != nil {
		tb.Fatal(err)
	}
	return clientKV(tb, s, secret)
}

// clientKV is the KV of a Consul client with the token secret.
func clientKV(tb testing.TB, s *localstack.Stack, secret string) *consul.KV {
	tb.Helper()
	c, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: secret})
	if err != nil {
		tb.Fatal(err)
	}
	return c.KV()
}
