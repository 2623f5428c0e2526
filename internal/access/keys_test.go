package access

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// PublicKeys reads a JWKS as Nomad serves it; a fake server here, as the
// cluster fault tests use the real one.
func TestPublicKeysAreTheJWKSKeys(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	rsaJWK := fmt.Sprintf(`{"kty":"RSA","kid":"a","alg":"RS256","use":"sig","n":%q,"e":%q}`,
		b64(key.N.Bytes()), b64(big.NewInt(int64(key.E)).Bytes()))
	tests := []struct {
		name, body string
		keys       int
		err        string
	}{
		{"an RSA key", `{"keys":[` + rsaJWK + `]}`, 1, ""},
		{"others skipped", `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"abc"},` + rsaJWK + `]}`, 1, ""},
		{"no key yet", `{"keys":[]}`, 0, "has no RSA key yet"},
		{"not JSON", `<html>`, 0, "invalid character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			keys, err := PublicKeys(context.Background(), srv.Client(), srv.URL+"/.well-known/jwks.json")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("PublicKeys: %v, want an error with %q", err, tt.err)
				}
				return
			}
			if err != nil || len(keys) != tt.keys {
				t.Fatalf("PublicKeys: %d keys, %v; want %d", len(keys), err, tt.keys)
			}
			block, _ := pem.Decode([]byte(keys[0]))
			if block == nil {
				t.Fatalf("not PEM: %q", keys[0])
			}
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil || !key.PublicKey.Equal(pub) {
				t.Errorf("the PEM key is not the JWKS's: %v", err)
			}
		})
	}
}
