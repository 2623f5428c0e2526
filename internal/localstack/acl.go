package localstack

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/kodekloud/counter/internal/access"
)

// The management tokens of a stack with ACLs, one file each, readable by
// their owner only.
const (
	secretsDir      = "secrets"
	nomadTokenFile  = "nomad-management-token"
	consulTokenFile = "consul-management-token"
	// The deployer's tokens, made from its policies by DeployerTokens.
	deployerNomadFile  = "deployer-nomad-token"
	deployerConsulFile = "deployer-consul-token"
	// A person's Nomad token, made from the operator's policy by
	// OperatorToken.
	operatorNomadFile = "nomad-operator-token"
	// The secret Consul's agent answers DNS questions with (the front
	// door's), made by grantDNS.
	consulDNSFile = "consul-dns-token"
	// Prometheus's Consul token (prometheusTokenFile) is kept here too.
)

// TokenFiles are the files that hold the stack's Nomad and Consul
// management tokens.
func TokenFiles(dir string) (nomadFile, consulFile string) {
	return filepath.Join(dir, secretsDir, nomadTokenFile), filepath.Join(dir, secretsDir, consulTokenFile)
}

// OperatorTokenFile is the file of the token OperatorToken makes.
func OperatorTokenFile(dir string) string { return filepath.Join(dir, secretsDir, operatorNomadFile) }

// makeTokens reads the stack's management tokens, making them the first
// time. They stay the same for the life of the state folder: Consul takes
// its token from its config only when it first bootstraps, and Nomad's is
// set when this stack bootstraps it.
func (s *Stack) makeTokens() error {
	s.ACL = true
	var err error
	if s.NomadToken, s.ConsulToken, err = readTokens(s.Dir); err != nil || s.NomadToken != "" {
		s.readDeployerTokens()
		if err != nil {
			return err
		}
		return s.makeServiceTokens()
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, secretsDir), 0o700); err != nil {
		return err
	}
	if err := s.makeServiceTokens(); err != nil {
		return err
	}
	nf, cf := TokenFiles(s.Dir)
	for _, t := range []struct {
		file  string
		token *string
	}{{nf, &s.NomadToken}, {cf, &s.ConsulToken}} {
		if *t.token, err = newSecret(); err != nil {
			return err
		}
		if err := os.WriteFile(t.file, []byte(*t.token+"\n"), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// makeServiceTokens reads the secrets of the Consul tokens of the stack's
// own services, the DNS interface's and Prometheus's, making them the
// first time.
func (s *Stack) makeServiceTokens() error {
	if err := s.makeDNSToken(); err != nil {
		return err
	}
	return s.makePrometheusToken()
}

// makeDNSToken reads the secret of the agent's DNS token, making it the
// first time (a stack made before the front door has none yet): Consul's
// config names it, and grantDNS makes the token once Consul runs.
func (s *Stack) makeDNSToken() (err error) {
	s.dnsToken, err = s.secretFile(consulDNSFile)
	return err
}

// secretFile reads the token secret kept in the stack's secrets folder
// under name, making and keeping a new one when there is none yet: a stack
// made before the part that needs it has none.
func (s *Stack) secretFile(name string) (string, error) {
	file := filepath.Join(s.Dir, secretsDir, name)
	if b, err := os.ReadFile(file); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	secret, err := newSecret()
	if err != nil {
		return "", err
	}
	return secret, os.WriteFile(file, []byte(secret+"\n"), 0o600)
}

// DNSToken returns the secret of the Consul token that answers the front
// door's DNS questions; "" without ACLs.
func (s *Stack) DNSToken() string { return s.dnsToken }

// newSecret makes a token secret: a random UUID, the form Nomad accepts
// for a bootstrap token.
func newSecret() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// readTokens reads the management tokens in dir; none yet is no error.
func readTokens(dir string) (nomadToken, consulToken string, err error) {
	nf, cf := TokenFiles(dir)
	n, nerr := os.ReadFile(nf)
	c, cerr := os.ReadFile(cf)
	if errors.Is(nerr, os.ErrNotExist) && errors.Is(cerr, os.ErrNotExist) {
		return "", "", nil
	}
	if err := errors.Join(nerr, cerr); err != nil {
		return "", "", fmt.Errorf("the stack's management tokens: %w", err)
	}
	return strings.TrimSpace(string(n)), strings.TrimSpace(string(c)), nil
}

// consulACL is the acl block of Consul's config: deny what no token allows.
// The agent acts with the management token, as a single-node stack may.
func (s *Stack) consulACL() map[string]any {
	return map[string]any{
		"enabled": true, "default_policy": "deny", "enable_token_persistence": true,
		"tokens": map[string]string{"initial_management": s.ConsulToken, "agent": s.ConsulToken, "dns": s.dnsToken},
	}
}

// nomadACL is what Nomad's config adds for ACLs: the acl block, and in
// the consul block the agent's token and the workload identities Nomad signs
// for Consul, so that a task logs in to Consul as itself, never with the
// agent's token.
func (s *Stack) nomadACL() (aclBlock, consulBody string) {
	if !s.ACL {
		return "", ""
	}
	return "acl {\n  enabled = true\n}\n", fmt.Sprintf(`  token = %q
  service_identity {
    aud = [%q]
    ttl = "1h"
  }
  task_identity {
    aud = [%q]
    ttl = "1h"
  }
`, s.ConsulToken, access.Audience, access.Audience)
}

// secure bootstraps Nomad's ACLs with the stack's management token and
// makes Consul trust the identities Nomad signs. Both may run again.
func (s *Stack) secure(ctx context.Context) error {
	if !s.ACL {
		return nil
	}
	c, err := s.nomadClient()
	if err != nil {
		return err
	}
	if leader, err := c.Status().Leader(); err != nil || leader == "" {
		return fmt.Errorf("no Nomad leader yet (%v)", err)
	}
	_, _, err = c.ACLTokens().BootstrapOpts(s.NomadToken, (&nomad.WriteOptions{}).WithContext(ctx))
	if err != nil && !strings.Contains(err.Error(), "ACL bootstrap already done") {
		return fmt.Errorf("bootstrap Nomad's ACLs: %w", err)
	}
	if _, _, err := c.ACLTokens().Self((&nomad.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("Nomad's ACLs were bootstrapped with another token than %s: %w", filepath.Join(s.Dir, secretsDir), err)
	}
	cc, err := s.consulClient()
	if err != nil {
		return err
	}
	jwks := s.NomadAddr + "/.well-known/jwks.json"
	if len(s.Nodes) == 0 {
		return access.SetUpWorkloadIdentity(ctx, cc, jwks)
	}
	// A cluster's Consul would fetch the keys from this one server, which
	// the fault tests kill: logins after that failed, and with them every
	// task's config (seen when it went before Consul's first fetch).
	keys, err := access.PublicKeys(ctx, s.httpClient(), jwks)
	if err != nil {
		return err
	}
	return access.SetUpWorkloadIdentityKeys(ctx, cc, keys)
}

// DeployerTokens gives the deployer tokens of its own on this stack, with
// the policies nomadRules and consulRules (written again each time, so an
// edited policy file applies), made the first time and kept in Dir/secrets.
// Env hands them out from then on.
func (s *Stack) DeployerTokens(ctx context.Context, nomadRules, consulRules string) error {
	const policy = "counter-deployer"
	nc, err := s.nomadClient()
	if err != nil {
		return err
	}
	cc, err := s.consulClient()
	if err != nil {
		return err
	}
	if err := access.PutNomadPolicy(ctx, nc, policy, nomadRules, "counter deployer"); err != nil {
		return err
	}
	if err := access.PutConsulPolicy(ctx, cc, policy, consulRules); err != nil {
		return err
	}
	if s.DeployerNomadToken != "" && s.DeployerConsulToken != "" && s.knowsDeployerTokens(ctx) {
		return nil
	}
	if s.DeployerNomadToken, err = access.NomadToken(ctx, nc, policy, "counter deployer"); err != nil {
		return err
	}
	if s.DeployerConsulToken, err = access.ConsulToken(ctx, cc, policy, "counter deployer"); err != nil {
		return err
	}
	for file, token := range map[string]string{deployerNomadFile: s.DeployerNomadToken, deployerConsulFile: s.DeployerConsulToken} {
		if err := os.WriteFile(filepath.Join(s.Dir, secretsDir, file), []byte(token+"\n"), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// OperatorToken gives a person a Nomad token of this stack with the policy
// rules (the operator's: read the jobs, revert them), for the Nomad UI and
// the nomad CLI, so that nobody needs the management token to look at or
// revert a release. It is made the first time, kept in Dir/secrets, and
// made again if Nomad does not know it (a stack started over with fresh
// data). It returns the token's file.
func (s *Stack) OperatorToken(ctx context.Context, rules string) (string, error) {
	const policy = "counter-operator"
	file := OperatorTokenFile(s.Dir)
	nc, err := s.nomadClient()
	if err != nil {
		return "", err
	}
	if err := access.PutNomadPolicy(ctx, nc, policy, rules, "counter operator"); err != nil {
		return "", err
	}
	if b, err := os.ReadFile(file); err == nil {
		c, err := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: strings.TrimSpace(string(b)), HttpClient: s.httpClient()})
		if err != nil {
			return "", err
		}
		// Only a token Nomad does not know is replaced (any token may read
		// itself, so a 403 says that): after any other error the kept one
		// may well be good, and a new one would leave it valid beside it.
		_, _, err = c.ACLTokens().Self((&nomad.QueryOptions{}).WithContext(ctx))
		if err == nil {
			return file, nil
		}
		var uerr nomad.UnexpectedResponseError
		if !errors.As(err, &uerr) || uerr.StatusCode() != http.StatusForbidden {
			return "", fmt.Errorf("check the operator token in %s: %w", file, err)
		}
	}
	token, err := access.NomadToken(ctx, nc, policy, "counter operator")
	if err != nil {
		return "", err
	}
	return file, os.WriteFile(file, []byte(token+"\n"), 0o600)
}

// knowsDeployerTokens reports whether Nomad and Consul know the deployer's
// tokens in Dir/secrets: the folder outlives a cluster stack started over
// with fresh data in its place, or the other way round.
func (s *Stack) knowsDeployerTokens(ctx context.Context) bool {
	nc, err := nomad.NewClient(&nomad.Config{Address: s.NomadAddr, SecretID: s.DeployerNomadToken, HttpClient: s.httpClient()})
	if err != nil {
		return false
	}
	if _, _, err := nc.ACLTokens().Self((&nomad.QueryOptions{}).WithContext(ctx)); err != nil {
		return false
	}
	cc, err := consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.DeployerConsulToken, HttpClient: s.httpClient()})
	if err != nil {
		return false
	}
	_, _, err = cc.ACL().TokenReadSelf((&consul.QueryOptions{}).WithContext(ctx))
	return err == nil
}

// readDeployerTokens reads the tokens DeployerTokens made, if any.
func (s *Stack) readDeployerTokens() {
	n, nerr := os.ReadFile(filepath.Join(s.Dir, secretsDir, deployerNomadFile))
	c, cerr := os.ReadFile(filepath.Join(s.Dir, secretsDir, deployerConsulFile))
	if nerr == nil && cerr == nil {
		s.DeployerNomadToken, s.DeployerConsulToken = strings.TrimSpace(string(n)), strings.TrimSpace(string(c))
	}
}

// Clients returns Nomad and Consul clients of the stack with its
// management tokens.
func (s *Stack) Clients() (*nomad.Client, *consul.Client, error) {
	nc, err := s.nomadClient()
	if err != nil {
		return nil, nil, err
	}
	cc, err := s.consulClient()
	return nc, cc, err
}

func (s *Stack) consulClient() (*consul.Client, error) {
	return consul.NewClient(&consul.Config{Address: s.ConsulAddr, Token: s.ConsulToken, HttpClient: s.httpClient()})
}
