// Package access sets up who may do what on a Consul and Nomad with ACLs on:
// the workload identity through which Nomad's tasks log in to Consul, one
// policy per job that lets its tasks read their own config snapshots and
// nothing else, and tokens made from policy files.
package access

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

// AuthMethod is the Consul auth method Nomad's workload identities log in
// with (Nomad's consul block names it by default).
const AuthMethod = "nomad-workloads"

// Audience is the audience Nomad's Consul identities are signed for.
const Audience = "consul.io"

// JobPolicy is the name of the Consul policy of a job's tasks. The binding
// rule of SetUpWorkloadIdentity gives each task the policy of its own job;
// a job without one gets no token at all.
//
// The underscore ends the namespace: a Nomad namespace name has none
// (^[a-zA-Z0-9-]{1,128}$), so no two jobs share a name. With a dash there,
// job "c" of namespace "a-b" and job "b-c" of namespace "a" got the same
// policy, and each one's tasks read the other's config.
func JobPolicy(namespace, job string) string {
	return "nomad-job-" + namespace + "_" + job
}

// validPolicyName is a policy name Consul both creates and logs a task in
// with: it creates names of up to 128 characters, one '/' allowed, but its
// login takes only letters, digits, '-' and '_' in the name a binding rule
// computes.
var validPolicyName = regexp.MustCompile(`^[A-Za-z0-9\-_]{1,128}$`)

// CheckJobPolicy says why the tasks of job in namespace cannot have a Consul
// policy of their own, or returns nil. Consul's login computes the name
// JobPolicy gives from the claims of the task's identity, lowercased, and
// gives no token when it is no valid policy name; and since Consul's policy
// names ignore case, a job with an upper-case letter would share its policy
// with the job of its lower-case name.
func CheckJobPolicy(namespace, job string) error {
	name := JobPolicy(namespace, job)
	if len(name) > 128 {
		return fmt.Errorf("Consul policy name %s is %d characters long, more than the 128 Consul takes", name, len(name))
	}
	if !validPolicyName.MatchString(name) {
		var bad []string
		for _, r := range name {
			if q := strconv.QuoteRune(r); !validPolicyName.MatchString(string(r)) && !slices.Contains(bad, q) {
				bad = append(bad, q)
			}
		}
		return fmt.Errorf("Consul policy name %s has %s, which Consul's login refuses in one (it takes letters, digits, '-' and '_')",
			name, strings.Join(bad, ", "))
	}
	if lower := strings.ToLower(name); lower != name {
		return fmt.Errorf("Consul policy name %s has upper case, which Consul's policy names ignore: it is the policy of %s too", name, lower)
	}
	return nil
}

// SetUpWorkloadIdentity makes Consul trust the identities the Nomad at
// jwksURL signs (what `nomad setup consul` does, narrowed): a service logs
// in as its own service; a task gets its job's policy, JobPolicy. It may run
// again: what exists is brought up to date.
func SetUpWorkloadIdentity(ctx context.Context, c *consul.Client, jwksURL string) error {
	return setUp(ctx, c, map[string]any{"JWKSURL": jwksURL}, "JWKS "+jwksURL)
}

// SetUpWorkloadIdentityKeys is SetUpWorkloadIdentity with Nomad's public
// keys given (PEM, from PublicKeys) instead of an address to fetch them
// from. Consul fetches a JWKS when a login needs keys it has not seen, from
// the one address it was given: on a cluster whose servers may be down one
// at a time and no address fronts them all, that one may be the one down.
// Keys given do not follow Nomad's key rotation: run it again after one.
func SetUpWorkloadIdentityKeys(ctx context.Context, c *consul.Client, keys []string) error {
	if len(keys) == 0 {
		return errors.New("no Nomad public keys to trust")
	}
	return setUp(ctx, c, map[string]any{"JWTValidationPubKeys": keys}, fmt.Sprintf("%d Nomad public keys", len(keys)))
}

// PublicKeys returns the RSA keys of the JWKS at url (Nomad's
// /.well-known/jwks.json) as PEM.
func PublicKeys(ctx context.Context, hc *http.Client, url string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch Nomad's JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch Nomad's JWKS %s: %s", url, resp.Status)
	}
	var set struct {
		Keys []struct{ Kty, N, E string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return nil, fmt.Errorf("Nomad's JWKS %s: %w", url, err)
	}
	var keys []string
	for _, k := range set.Keys {
		if k.Kty != "RSA" {
			continue
		}
		n, nerr := base64.RawURLEncoding.DecodeString(k.N)
		e, eerr := base64.RawURLEncoding.DecodeString(k.E)
		if nerr != nil || eerr != nil || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("Nomad's JWKS %s: a key that is not RSA as RFC 7518 writes it", url)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, err
		}
		keys = append(keys, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("Nomad's JWKS %s has no RSA key yet", url)
	}
	return keys, nil
}

func setUp(ctx context.Context, c *consul.Client, keys map[string]any, from string) error {
	acl := c.ACL()
	w := (&consul.WriteOptions{}).WithContext(ctx)
	method := &consul.ACLAuthMethod{
		Name: AuthMethod, Type: "jwt", DisplayName: AuthMethod,
		Description:   "Nomad workloads, by the identity Nomad signs for each service and task",
		TokenLocality: "local",
		Config: map[string]any{
			"JWTSupportedAlgs": []string{"RS256"},
			"BoundAudiences":   []string{Audience},
			"ClaimMappings": map[string]string{
				"nomad_namespace": "nomad_namespace",
				"nomad_job_id":    "nomad_job_id",
				"nomad_task":      "nomad_task",
				"nomad_service":   "nomad_service",
			},
		},
	}
	maps.Copy(method.Config, keys)
	methods, _, err := acl.AuthMethodList((&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list Consul auth methods: %w", err)
	}
	exists := false
	for _, m := range methods {
		exists = exists || m.Name == AuthMethod
	}
	if exists {
		_, _, err = acl.AuthMethodUpdate(method, w)
	} else {
		_, _, err = acl.AuthMethodCreate(method, w)
	}
	if err != nil {
		return fmt.Errorf("write Consul auth method %s (%s): %w", AuthMethod, from, err)
	}

	want := []*consul.ACLBindingRule{
		{
			Description: "a Nomad service registers itself",
			AuthMethod:  AuthMethod, BindType: consul.BindingRuleBindTypeService,
			BindName: "${value.nomad_service}", Selector: `"nomad_service" in value`,
		},
		{
			Description: "a Nomad task gets its job's policy, and only that",
			AuthMethod:  AuthMethod, BindType: consul.BindingRuleBindTypePolicy,
			BindName: JobPolicy("${value.nomad_namespace}", "${value.nomad_job_id}"),
			Selector: `"nomad_service" not in value`,
		},
	}
	rules, _, err := acl.BindingRuleList(AuthMethod, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list the binding rules of %s: %w", AuthMethod, err)
	}
	// Rules of an earlier set-up that are not wanted now go: one left
	// behind could grant more than JobPolicy.
	for _, r := range rules {
		if !hasRule(want, r) {
			if _, err := acl.BindingRuleDelete(r.ID, w); err != nil {
				return fmt.Errorf("delete binding rule %s: %w", r.ID, err)
			}
		}
	}
	for _, r := range want {
		if !hasRule(rules, r) {
			if _, _, err := acl.BindingRuleCreate(r, w); err != nil {
				return fmt.Errorf("create binding rule %q: %w", r.Description, err)
			}
		}
	}
	return nil
}

func hasRule(rules []*consul.ACLBindingRule, r *consul.ACLBindingRule) bool {
	for _, x := range rules {
		if x.AuthMethod == r.AuthMethod && x.BindType == r.BindType && x.BindName == r.BindName && x.Selector == r.Selector {
			return true
		}
	}
	return false
}

// GrantJobConfig lets the tasks of job read the Consul KV folder its config
// snapshots live in, and nothing else. It refuses a job CheckJobPolicy
// refuses, whose policy could be another job's.
func GrantJobConfig(ctx context.Context, c *consul.Client, namespace, job, folder string) error {
	if err := CheckJobPolicy(namespace, job); err != nil {
		return fmt.Errorf("grant job %s of namespace %s its config: %w", job, namespace, err)
	}
	rules := fmt.Sprintf("# The tasks of Nomad job %s (namespace %s) read their config snapshots.\n"+
		"key_prefix %q {\n  policy = \"read\"\n}\n", job, namespace, folder+"/")
	return PutConsulPolicy(ctx, c, JobPolicy(namespace, job), rules)
}

// PutConsulPolicy creates the Consul policy name with rules, or updates it.
func PutConsulPolicy(ctx context.Context, c *consul.Client, name, rules string) error {
	acl := c.ACL()
	w := (&consul.WriteOptions{}).WithContext(ctx)
	p, _, err := acl.PolicyReadByName(name, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("read Consul policy %s: %w", name, err)
	}
	if p == nil {
		_, _, err = acl.PolicyCreate(&consul.ACLPolicy{Name: name, Rules: rules}, w)
	} else if p.Rules != rules {
		p.Rules = rules
		_, _, err = acl.PolicyUpdate(p, w)
	}
	if err != nil {
		return fmt.Errorf("write Consul policy %s: %w", name, err)
	}
	return nil
}

// ConsulToken makes a token with the policy name, which PutConsulPolicy
// wrote, and returns its secret.
func ConsulToken(ctx context.Context, c *consul.Client, name, description string) (string, error) {
	t, _, err := c.ACL().TokenCreate(&consul.ACLToken{
		Description: description, Policies: []*consul.ACLTokenPolicyLink{{Name: name}},
	}, (&consul.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("create a Consul token with policy %s: %w", name, err)
	}
	return t.SecretID, nil
}

// PutNomadPolicy creates the Nomad policy name with rules, or updates it.
func PutNomadPolicy(ctx context.Context, c *nomad.Client, name, rules, description string) error {
	w := (&nomad.WriteOptions{}).WithContext(ctx)
	if _, err := c.ACLPolicies().Upsert(&nomad.ACLPolicy{Name: name, Description: description, Rules: rules}, w); err != nil {
		return fmt.Errorf("write Nomad policy %s: %w", name, err)
	}
	return nil
}

// NomadToken makes a client token with the Nomad policy name, which
// PutNomadPolicy wrote, and returns its secret.
func NomadToken(ctx context.Context, c *nomad.Client, name, description string) (string, error) {
	w := (&nomad.WriteOptions{}).WithContext(ctx)
	t, _, err := c.ACLTokens().Create(&nomad.ACLToken{Name: description, Type: "client", Policies: []string{name}}, w)
	if err != nil {
		return "", fmt.Errorf("create a Nomad token with policy %s: %w", name, err)
	}
	return t.SecretID, nil
}
